"""Time the JAX neighbour list (build and skin update) against vesin and ASE, side by side.

Rutile TiO2 supercells of 72, 576 and 4608 atoms, cutoff 6 A, rattled by 0.05 A. For each size:
the build the project runs by default (``allocate`` + jitted ``build``; on a CPU the compiled
cell-list kernel ``kernels/cell_list_cpu.py``), the pure-jnp cell list (its tested reference and
the GPU path), the all-pairs "brute" search where it is affordable (the crossover), the skin
update that reuses the list, vesin and ASE. Then a frame-batched analysis: the six nearest Ti-O
distances of every Ti atom in 1,000 frames of the 72-atom cell with
``observables.nearest_neighbour_distances`` against vesin called frame by frame (same numbers
checked). Prints a table and the ratios (ours / reference, lower is better); --json writes them.
Never asserts. Compilation is excluded (best of repeats after a warm-up call).

    python benchmarks/neighbours.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from _timing import best_of  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax import neighbours as nl
from slhmc_jax.analysis import observables
from slhmc_jax.structures import rutile

SIZES = {72: (2, 2, 3), 576: (4, 4, 6), 4608: (8, 8, 12)}
BRUTE_UP_TO = 600  # atoms: the all-pairs search is timed below this (0.8 s per build at 576)


def time_sizes(args, repeats, vesin, primitive_neighbor_list):
    build = jax.jit(nl.build, static_argnums=0)
    update = jax.jit(nl.update, static_argnums=0)
    out = {}
    for n_atoms, rep in SIZES.items():
        atoms = rutile(repeat=rep)
        atoms.rattle(0.05, seed=0)
        x, cell = jnp.asarray(atoms.positions), jnp.asarray(np.asarray(atoms.cell))
        layout, nbrs = nl.allocate(atoms.positions, np.asarray(atoms.cell), True, args.cutoff)
        t_build = best_of(lambda: build(layout, x, cell).senders.block_until_ready(), repeats)
        kernel = nl.cells_kernel(layout.kernel) if layout.method == "cells" else "-"
        t_jnp = t_brute = float("nan")
        if layout.method == "cells":
            ref = dataclasses.replace(layout, kernel="jnp")
            t_jnp = best_of(lambda: build(ref, x, cell).senders.block_until_ready(), max(1, repeats // 3))
        if n_atoms <= BRUTE_UP_TO:
            brute, _ = nl.allocate(atoms.positions, np.asarray(atoms.cell), True, args.cutoff, method="brute")
            t_brute = best_of(lambda: build(brute, x, cell).senders.block_until_ready(), max(1, repeats // 3))
        t_kernel = float("nan")
        if kernel == "numba":
            from kernels import cell_list_cpu

            # the kernel alone on NumPy arrays: what the pure_callback boundary adds is the rest
            t_kernel = best_of(lambda: cell_list_cpu.search(
                atoms.positions, np.asarray(atoms.cell), args.cutoff, n_atoms, grid=layout.grid,
                bin_capacity=layout.bin_capacity, capacity=layout.capacity, max_neighbours=None), repeats)
        skin_layout, skin_nbrs = nl.allocate(atoms.positions, np.asarray(atoms.cell), True, args.cutoff, args.skin)
        x_moved = x + 0.01
        t_update = best_of(lambda: update(skin_layout, x_moved, cell, skin_nbrs).senders.block_until_ready(), repeats)
        nlist = vesin.NeighborList(cutoff=args.cutoff, full_list=True)
        t_vesin = best_of(lambda: nlist.compute(atoms.positions, np.asarray(atoms.cell), True, quantities="ijS"), repeats)
        if args.quick and n_atoms > 1000:
            t_ase = float("nan")
        else:
            t_ase = best_of(
                lambda: primitive_neighbor_list("ijS", atoms.pbc, atoms.cell, atoms.positions, args.cutoff),
                max(1, repeats // 3),
            )
        out[n_atoms] = {
            "method": layout.method, "kernel": kernel, "grid": list(layout.grid), "n_pairs": int(nbrs.n_pairs),
            "build_s": t_build, "kernel_only_s": t_kernel, "jnp_cells_s": t_jnp, "brute_s": t_brute,
            "skin_update_s": t_update, "vesin_s": t_vesin, "ase_s": t_ase,
        }
    return out


def vesin_nearest(vesin, frames_pos, cell, ti, o, k, cutoff):
    """(F, n_Ti, k) nearest Ti-O distances from vesin's pair list, one call per frame."""
    nlist = vesin.NeighborList(cutoff=cutoff, full_list=True)
    is_o = np.zeros(frames_pos.shape[1], bool)
    is_o[o] = True
    rows = np.full(frames_pos.shape[1], -1)
    rows[ti] = np.arange(len(ti))
    out = np.empty((frames_pos.shape[0], len(ti), k))
    for f, x in enumerate(frames_pos):
        i, j, d = nlist.compute(x, cell, True, quantities="ijd")
        keep = (rows[i] >= 0) & is_o[j]
        r, d = rows[i[keep]], d[keep]
        order = np.lexsort((d, r))  # by Ti row, then distance
        r, d = r[order], d[order]
        starts = np.searchsorted(r, np.arange(len(ti)))
        out[f] = d[starts[:, None] + np.arange(k)[None, :]]
    return out


def time_frames(args, vesin):
    atoms = rutile(repeat=SIZES[72])
    rng = np.random.default_rng(0)
    n_frames = 100 if args.quick else 1000
    positions = atoms.positions[None] + rng.normal(scale=0.08, size=(n_frames, len(atoms), 3))
    cell = np.asarray(atoms.cell)
    frames = (positions, cell, atoms.numbers, (True, True, True))
    ti = np.nonzero(atoms.numbers == 22)[0]
    o = np.nonzero(atoms.numbers == 8)[0]
    k = 6
    ours = observables.nearest_neighbour_distances(frames, "Ti", "O", k=k)  # warm-up (compilation)
    t0 = time.perf_counter()
    ours = observables.nearest_neighbour_distances(frames, "Ti", "O", k=k)
    t_ours = time.perf_counter() - t0
    ref = vesin_nearest(vesin, positions[:2], cell, ti, o, k, 3.0)  # warm-up
    t0 = time.perf_counter()
    ref = vesin_nearest(vesin, positions, cell, ti, o, k, 3.0)
    t_vesin = time.perf_counter() - t0
    return {"n_frames": n_frames, "n_atoms": len(atoms), "k": k, "ours_s": t_ours, "vesin_loop_s": t_vesin,
            "ratio_vs_vesin": t_ours / t_vesin, "max_abs_difference_A": float(np.max(np.abs(ours - ref)))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and frames, skip ASE at 4608 atoms")
    parser.add_argument("--json", help="write results to this file")
    parser.add_argument("--cutoff", type=float, default=6.0, help="Angstrom")
    parser.add_argument("--skin", type=float, default=0.5, help="Angstrom, for the update timing")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 10
    import vesin
    from ase.neighborlist import primitive_neighbor_list

    sizes = time_sizes(args, repeats, vesin, primitive_neighbor_list)
    frames = time_frames(args, vesin)
    result = {
        "cutoff_A": args.cutoff, "device": str(jax.devices()[0]), "sizes": sizes,
        "ratio_vs_vesin": {n: v["build_s"] / v["vesin_s"] for n, v in sizes.items()},
        "ratio_vs_ase": {n: v["build_s"] / v["ase_s"] for n, v in sizes.items()},
        "frames": frames,
    }
    ms = lambda t: f"{1e3 * t:.2f}"  # noqa: E731
    print(f"{'atoms':>6} {'method':>6} {'kernel':>6} {'pairs':>8} {'build ms':>9} {'kernel ms':>9} {'jnp ms':>8} "
          f"{'brute ms':>9} {'update ms':>9} {'vesin ms':>9} {'ase ms':>8} {'ours/vesin':>10} {'ours/ase':>8}")
    for n, v in sizes.items():
        print(f"{n:6d} {v['method']:>6} {v['kernel']:>6} {v['n_pairs']:8d} {ms(v['build_s']):>9} {ms(v['kernel_only_s']):>9} "
              f"{ms(v['jnp_cells_s']):>8} {ms(v['brute_s']):>9} {1e3 * v['skin_update_s']:9.3f} {ms(v['vesin_s']):>9} "
              f"{ms(v['ase_s']):>8} {v['build_s'] / v['vesin_s']:10.2f} {v['build_s'] / v['ase_s']:8.3f}")
    print(f"frames: {frames['n_frames']} x {frames['n_atoms']} atoms, {frames['k']} nearest Ti-O: ours "
          f"{frames['ours_s']:.3f} s, vesin loop {frames['vesin_loop_s']:.3f} s, ratio {frames['ratio_vs_vesin']:.2f}, "
          f"max |difference| {frames['max_abs_difference_A']:.2e} A")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
