"""Time the JAX neighbour list (build and skin update) against vesin and ASE, side by side.

Rutile TiO2 supercells of 72, 576 and 4608 atoms, cutoff 6 A. Prints a table and the ratios
(ours / reference, lower is better); writes them with --json. Never asserts.

    python benchmarks/neighbours.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json

from _timing import best_of  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax import neighbours as nl
from slhmc_jax.structures import rutile

SIZES = {72: (2, 2, 3), 576: (4, 4, 6), 4608: (8, 8, 12)}




def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, skip ASE at 4608 atoms")
    parser.add_argument("--json", help="write results to this file")
    parser.add_argument("--cutoff", type=float, default=6.0, help="Angstrom")
    parser.add_argument("--skin", type=float, default=0.5, help="Angstrom, for the update timing")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 10
    import vesin
    from ase.neighborlist import primitive_neighbor_list

    rows, result = [], {"cutoff_A": args.cutoff, "device": str(jax.devices()[0]), "sizes": {}}
    for n_atoms, rep in SIZES.items():
        atoms = rutile(repeat=rep)
        atoms.rattle(0.05, seed=0)
        x, cell = jnp.asarray(atoms.positions), jnp.asarray(np.asarray(atoms.cell))
        layout, nbrs = nl.allocate(atoms.positions, np.asarray(atoms.cell), True, args.cutoff)
        build = jax.jit(nl.build, static_argnums=0)
        t_build = best_of(lambda: build(layout, x, cell).senders.block_until_ready(), repeats)
        n_pairs = int(nbrs.n_pairs)
        skin_layout, skin_nbrs = nl.allocate(atoms.positions, np.asarray(atoms.cell), True, args.cutoff, args.skin)
        update = jax.jit(nl.update, static_argnums=0)
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
        result["sizes"][n_atoms] = {
            "method": layout.method,
            "n_pairs": n_pairs,
            "build_s": t_build,
            "skin_update_s": t_update,
            "vesin_s": t_vesin,
            "ase_s": t_ase,
        }
        rows.append((n_atoms, layout.method, n_pairs, t_build, t_update, t_vesin, t_ase))
    result["ratio_vs_vesin"] = {n: v["build_s"] / v["vesin_s"] for n, v in result["sizes"].items()}
    result["ratio_vs_ase"] = {n: v["build_s"] / v["ase_s"] for n, v in result["sizes"].items()}
    print(f"{'atoms':>6} {'method':>6} {'pairs':>8} {'build ms':>9} {'update ms':>9} {'vesin ms':>9} {'ase ms':>8} "
          f"{'ours/vesin':>10} {'ours/ase':>8}")
    for n, m, p, tb, tu, tv, ta in rows:
        print(f"{n:6d} {m:>6} {p:8d} {1e3*tb:9.2f} {1e3*tu:9.3f} {1e3*tv:9.2f} {1e3*ta:8.1f} {tb/tv:10.2f} {tb/ta:8.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
