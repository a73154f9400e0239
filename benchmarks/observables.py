"""Time the Ti-O RDF of a 10^4-frame, 72-atom rutile trajectory against NumPy and ASE references.

Frames: rutile TiO2 2x2x3 (72 atoms, cell 9.19 x 9.19 x 8.88 A, thinner than 2 r_max, so the
minimum image is not enough), thermal displacements of 0.1 A and cells that differ frame to
frame (NPT-like). g_Ti-O(r) on [0, 6) A in 200 bins.

- ours: :func:`slhmc_jax.analysis.observables.rdf` on all frames (JAX, jitted, vmapped chunks);
- numpy: a vectorised direct image sum per frame (27 images x 24 x 48 pairs, ``np.histogram``);
- ase: ``ase.neighborlist.neighbor_list('ijd')`` per frame, Ti-O pairs histogrammed.

The references run on a subset and are scaled per frame. Prints a table and the ratios
(reference time / ours, higher is better for us); writes them with --json. Never asserts.

    python benchmarks/observables.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import jax
import numpy as np

from slhmc_jax.analysis import observables as ob
from slhmc_jax.structures import rutile

R_MAX, N_BINS = 6.0, 200


def _frames(n_frames: int, seed: int = 0):
    base = rutile(repeat=(2, 2, 3))
    rng = np.random.default_rng(seed)
    strain = 1.0 + rng.normal(0.0, 0.005, (n_frames, 3))
    cells = np.asarray(base.cell)[None] * strain[:, :, None]
    frac = base.get_scaled_positions()[None] + rng.normal(0.0, 0.1, (n_frames, len(base), 3)) / np.linalg.norm(base.cell, axis=1)
    positions = np.einsum("fni,fij->fnj", frac, cells)
    return positions, cells, base.numbers


def _numpy_rdf(positions, cells, numbers):
    ti, o = np.nonzero(numbers == 22)[0], np.nonzero(numbers == 8)[0]
    shifts = np.array(list(itertools.product((-1, 0, 1), repeat=3)), float)
    edges = np.linspace(0.0, R_MAX, N_BINS + 1)
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    g = np.zeros(N_BINS)
    for x, cell in zip(positions, cells):
        d = x[o][None, :, None, :] - x[ti][:, None, None, :] + (shifts @ cell)[None, None]
        r = np.sqrt(np.sum(d * d, axis=-1)).ravel()
        counts, _ = np.histogram(r[r < R_MAX], edges)
        g += counts * abs(np.linalg.det(cell)) / (ti.size * o.size) / shell
    return g / len(positions)


def _ase_rdf(positions, cells, numbers):
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    edges = np.linspace(0.0, R_MAX, N_BINS + 1)
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    n_ti, n_o = int(np.sum(numbers == 22)), int(np.sum(numbers == 8))
    g = np.zeros(N_BINS)
    for x, cell in zip(positions, cells):
        atoms = Atoms(numbers=numbers, positions=x, cell=cell, pbc=True)
        i, j, d = neighbor_list("ijd", atoms, R_MAX)
        keep = (numbers[i] == 22) & (numbers[j] == 8)
        counts, _ = np.histogram(d[keep], edges)
        g += counts * abs(np.linalg.det(cell)) / (n_ti * n_o) / shell
    return g / len(positions)


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10^3 frames for ours, fewer reference frames")
    parser.add_argument("--json", help="write results to this file")
    args = parser.parse_args(argv)
    n_frames = 1_000 if args.quick else 10_000
    n_numpy, n_ase = (100, 20) if args.quick else (1_000, 100)
    positions, cells, numbers = _frames(n_frames)
    frames = (positions, cells, numbers, True)

    cold, _ = _timed(ob.rdf, frames, ("Ti", "O"), R_MAX, N_BINS)
    warm, (r, g) = _timed(ob.rdf, frames, ("Ti", "O"), R_MAX, N_BINS)
    t_nn, _ = _timed(ob.nearest_neighbour_distances, frames, "Ti", "O", 6)
    t_np, g_np = _timed(_numpy_rdf, positions[:n_numpy], cells[:n_numpy], numbers)
    t_ase, g_ase = _timed(_ase_rdf, positions[:n_ase], cells[:n_ase], numbers)
    _, g_sub = ob.rdf((positions[:n_numpy], cells[:n_numpy], numbers, True), ("Ti", "O"), R_MAX, N_BINS)
    _, g_sub_ase = ob.rdf((positions[:n_ase], cells[:n_ase], numbers, True), ("Ti", "O"), R_MAX, N_BINS)

    per = {"ours": warm / n_frames, "numpy": t_np / n_numpy, "ase": t_ase / n_ase}
    result = {
        "device": str(jax.devices()[0]),
        "n_frames": n_frames,
        "n_atoms": int(positions.shape[1]),
        "pair": "Ti-O",
        "r_max_A": R_MAX,
        "n_bins": N_BINS,
        "ours_cold_s": cold,
        "ours_warm_s": warm,
        "ours_nearest_neighbours_s": t_nn,
        "per_frame_ms": {k: 1e3 * v for k, v in per.items()},
        "ratio_numpy_over_ours": per["numpy"] / per["ours"],
        "ratio_ase_over_ours": per["ase"] / per["ours"],
        "max_abs_diff_vs_numpy": float(np.max(np.abs(g_sub - g_np))),
        "max_abs_diff_vs_ase": float(np.max(np.abs(g_sub_ase - g_ase))),
    }
    print(f"Ti-O RDF, rutile 2x2x3 ({positions.shape[1]} atoms), r_max {R_MAX} A, {N_BINS} bins, {jax.devices()[0]}")
    print(f"{'method':>8} {'frames':>7} {'total s':>9} {'ms/frame':>9} {f'est. {n_frames} frames s':>20} {'ref/ours':>9}")
    for name, n, total in (("ours", n_frames, warm), ("numpy", n_numpy, t_np), ("ase", n_ase, t_ase)):
        print(f"{name:>8} {n:7d} {total:9.3f} {1e3 * total / n:9.4f} {total / n * n_frames:20.2f} {per[name] / per['ours']:9.1f}")
    print(f"ours: {cold:.2f} s with compilation; nearest-neighbour distances (k = 6) of all frames {t_nn:.2f} s")
    print(f"max |g_ours - g_numpy| = {result['max_abs_diff_vs_numpy']:.2e}, max |g_ours - g_ase| = {result['max_abs_diff_vs_ase']:.2e}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
