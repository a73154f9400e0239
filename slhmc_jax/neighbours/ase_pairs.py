"""One-off host queries: all pairs of an ``ase.Atoms`` within a cutoff, as ASE's
``primitive_neighbor_list('ijS')``, from the padded, bucketed searches (shared compiled code).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax.neighbours.allocation import box_volume, choose_layout, estimate_capacity, fullest_bin_capacity
from slhmc_jax.neighbours.brute import brute_search, image_chunks
from slhmc_jax.neighbours.cell_list import build_cells, cells_kernel
from slhmc_jax.neighbours.geometry import completed_cell, validate_geometry
from slhmc_jax.neighbours.shapes import bucket_down, bucket_pow2, bucket_pow4
from slhmc_jax.neighbours.types import NeighbourLayout, Neighbours


def _padded_build(layout: NeighbourLayout, positions, full, periodic, chunks, n_valid, radius) -> Neighbours:
    """The search on padded inputs, shapes the only static part (see ``_padded_build_jit``)."""
    if layout.method == "cells":
        return build_cells(layout, positions, full, n_valid, radius)
    return brute_search(layout.capacity, positions, full, periodic, chunks, n_valid, radius)


# only shapes (padded atom count, capacity, translation chunks) and, for the cell list, the
# grid are static here, so structures of other sizes, periodicities and cutoffs reuse the
# compiled search
_padded_build_jit = jax.jit(_padded_build, static_argnums=0)


def neighbour_pairs(atoms, cutoff: float, *, method: str = "auto"):
    """All pairs within ``cutoff`` of an ``ase.Atoms``, as ASE's ``primitive_neighbor_list('ijS')``.

    Computed with this module's JAX list (not by calling ASE). Atom count, pair capacity and
    the number of searched translations are padded to a few bucket sizes so that many
    different structures share compiled code.

    Args:
        atoms: ase.Atoms (positions, cell, pbc are used).
        cutoff: Angstrom.
        method: "auto" (the cell list wherever the cell allows it with the compiled CPU
            kernel; with the pure-jnp one, padded brute force up to 1024 atoms and the cell
            list above), "brute" or "cells".

    Returns:
        (i, j, S): int arrays of shapes (n_pairs,), (n_pairs,), (n_pairs, 3), sorted by
        (i, j, S), with positions[j] - positions[i] + S @ cell shorter than cutoff.
    """
    if cutoff is None or not np.isfinite(cutoff) or cutoff < 0:
        raise ValueError(f"cutoff must be a finite non-negative distance in Angstrom; got {cutoff}")
    positions, cell, pbc = validate_geometry(atoms.get_positions(), np.asarray(atoms.get_cell()), atoms.get_pbc(), cutoff)
    n = positions.shape[0]
    empty = np.zeros((0,), np.int64), np.zeros((0,), np.int64), np.zeros((0, 3), np.int64)
    if n == 0 or cutoff == 0:
        return empty
    full = np.asarray(completed_cell(jnp.asarray(cell), pbc))
    volume = abs(np.linalg.det(full)) if all(pbc) else box_volume(positions, full, pbc, cutoff)
    capacity = estimate_capacity(n, volume, cutoff)
    if method == "auto" and n <= 1024 and cells_kernel() == "jnp":
        # one-off host queries: the padded brute search (a few shapes shared by all structures up to
        # 1024 atoms, ~1e6 distances per image) beats compiling a cell list for each new grid
        method = "brute"
    layout = choose_layout(positions, cell, pbc, float(cutoff), 0.0, method, capacity, 0)
    n_pad = max(16, bucket_pow2(n))  # tiny systems share one padded size (16^2 pairs per image is trivial)
    padded = np.zeros((n_pad, 3))
    padded[:n] = positions
    for _ in range(3):
        # capacity in powers of 4 (pair arrays at most 4x too long, half as many compiled shapes)
        layout = dataclasses.replace(layout, n_atoms=n_pad, capacity=bucket_pow4(max(layout.capacity, 1024)))
        if layout.method == "brute":
            raw = image_chunks(layout.n_images, n_pad, bucket_rows=True)
            chunks = image_chunks(layout.n_images, n_pad, min_steps=bucket_pow2(raw.shape[0]), bucket_rows=True)
            key = NeighbourLayout(n_pad, 0.0, 0.0, (True, True, True), layout.capacity, "brute")
        else:
            chunks = np.zeros((1, 1, 4), np.int32)
            # bucketed grid and bin capacity, radius traced: cells of other sizes and cutoffs share code
            grid = tuple(bucket_down(g) for g in layout.grid)
            bcap = bucket_pow2(max(layout.bin_capacity, fullest_bin_capacity(positions, full, grid)))
            layout = dataclasses.replace(layout, grid=grid, bin_capacity=bcap)
            key = NeighbourLayout(n_pad, 0.0, 0.0, (True, True, True), layout.capacity, "cells", (0, 0, 0), grid, bcap)
        nbrs = _padded_build_jit(
            key, jnp.asarray(padded), jnp.asarray(full), jnp.asarray(pbc), jnp.asarray(chunks), n, float(cutoff)
        )
        count = int(nbrs.n_pairs)
        if not bool(nbrs.overflow):
            break
        # the count is exact even on overflow; a full bin needs a larger bin capacity
        layout = dataclasses.replace(
            layout, capacity=max(layout.capacity, count), bin_capacity=2 * layout.bin_capacity
        )
    else:
        raise RuntimeError(f"neighbour search kept overflowing: {layout}")
    mask = np.asarray(nbrs.mask)
    i = np.asarray(nbrs.senders)[mask].astype(np.int64)
    j = np.asarray(nbrs.receivers)[mask].astype(np.int64)
    S = np.asarray(nbrs.shifts)[mask].astype(np.int64)
    order = np.lexsort((S[:, 2], S[:, 1], S[:, 0], j, i))
    return i[order], j[order], S[order]
