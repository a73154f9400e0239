"""Cell-list neighbour search on the CPU: a Numba kernel behind ``jax.pure_callback``.

Why a kernel: on XLA's CPU backend the pure-jnp cell list spends its time in gathers over
27 x bin_capacity candidate slots per atom and in compacting them (cumsum, searchsorted); a
compiled loop visits each candidate once and writes each pair once, the way vesin does, so its
work is proportional to the candidates in the 27 neighbouring bins plus the pairs it finds.

Algorithm (fully periodic cell, every bin at least one search radius wide, as the "cells"
method of :mod:`slhmc_jax.neighbours` requires):

1. fractional coordinates f = x cell^-1, wrapped: W = floor(f), f <- f - W, x_w = f cell;
2. atoms hashed to bins b = floor(f g) and counting-sorted (bin starts, atoms of a bin contiguous);
3. for every receiving atom a (in index order), for each of the 27 (bin, lattice shift s)
   neighbours of a's bin, every atom c there: d = x_w[a] - x_w[c] - s cell; a pair if
   |d|^2 < r^2 (and not the atom itself at zero shift), written as sender c, receiver a,
   S = W_c - W_a - s (so that d = x_a - x_c + S cell, the module's convention).

Pairs come out receiver-major (atom order) and, within a receiver, in stencil order; the dense
(n_atoms, K) format is filled directly. Counts are exact even when the capacity overflows.
Distances are computed in float64 whatever the input dtype.
"""

from __future__ import annotations

import functools

import numpy as np

try:  # numba is a dependency, but the pure-jnp path must keep working without it
    import numba

    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised only where numba is absent
    numba = None
    AVAILABLE = False


def _njit(fn):
    return numba.njit(cache=True, nogil=True)(fn) if AVAILABLE else fn


@_njit
def _search(positions, cell, inv_cell, grid, radius, n_valid, bin_capacity, dense,
            senders, receivers, shifts, mask):
    """One configuration. Writes the output arrays in place; returns (n_pairs, max_per_atom, max_bin).

    Args:
        positions: (n, 3) float64 Angstrom; cell, inv_cell: (3, 3) float64.
        grid: (3,) int64 bins per direction; radius: search radius, Angstrom.
        n_valid: atoms >= n_valid are padding (never paired).
        bin_capacity: the layout's atoms per bin (only reported against: the search itself
            never truncates a bin).
        dense: if True the outputs are (n, K) tables (row = receiver), else (1, capacity) (the
            pair list as one row).
        senders, receivers: int32 outputs, pre-filled with n; shifts: int32 (rows, slots, 3)
            zeros; mask: bool outputs, pre-filled False.
    """
    n = positions.shape[0]
    gx, gy, gz = grid[0], grid[1], grid[2]
    n_bins = gx * gy * gz
    frac = np.empty((n, 3))
    wrapped = np.empty((n, 3))
    W = np.empty((n, 3), np.int64)
    bin_of = np.empty(n, np.int64)
    counts = np.zeros(n_bins + 1, np.int64)
    for a in range(n):
        for k in range(3):
            f = positions[a, 0] * inv_cell[0, k] + positions[a, 1] * inv_cell[1, k] + positions[a, 2] * inv_cell[2, k]
            w = np.floor(f)
            W[a, k] = np.int64(w)
            frac[a, k] = f - w
        for k in range(3):
            wrapped[a, k] = frac[a, 0] * cell[0, k] + frac[a, 1] * cell[1, k] + frac[a, 2] * cell[2, k]
        bx = min(max(np.int64(np.floor(frac[a, 0] * gx)), 0), gx - 1)
        by = min(max(np.int64(np.floor(frac[a, 1] * gy)), 0), gy - 1)
        bz = min(max(np.int64(np.floor(frac[a, 2] * gz)), 0), gz - 1)
        b = (bx * gy + by) * gz + bz if a < n_valid else n_bins
        bin_of[a] = b
        counts[b] += 1
    starts = np.zeros(n_bins + 2, np.int64)
    for b in range(n_bins + 1):
        starts[b + 1] = starts[b] + counts[b]
    fill = starts.copy()
    sorted_atoms = np.empty(n, np.int64)
    sorted_pos = np.empty((n, 3))
    for a in range(n):
        b = bin_of[a]
        sorted_atoms[fill[b]] = a
        sorted_pos[fill[b], :] = wrapped[a, :]
        fill[b] += 1
    max_bin = 0
    for b in range(n_bins):
        max_bin = max(max_bin, counts[b])

    r2max = radius * radius
    slots = senders.shape[1]
    n_pairs = 0
    max_per_atom = 0
    for a in range(min(n, n_valid)):
        b = bin_of[a]
        bz = b % gz
        by = (b // gz) % gy
        bx = b // (gy * gz)
        xa0, xa1, xa2 = wrapped[a, 0], wrapped[a, 1], wrapped[a, 2]
        row = 0
        for ox in range(-1, 2):
            rx = bx + ox
            sx = (rx - (rx % gx)) // gx  # floor division shift of the neighbouring bin
            nx = rx - sx * gx
            for oy in range(-1, 2):
                ry = by + oy
                sy = (ry - (ry % gy)) // gy
                ny = ry - sy * gy
                for oz in range(-1, 2):
                    rz = bz + oz
                    sz = (rz - (rz % gz)) // gz
                    nz = rz - sz * gz
                    nb = (nx * gy + ny) * gz + nz
                    t0 = sx * cell[0, 0] + sy * cell[1, 0] + sz * cell[2, 0]
                    t1 = sx * cell[0, 1] + sy * cell[1, 1] + sz * cell[2, 1]
                    t2 = sx * cell[0, 2] + sy * cell[1, 2] + sz * cell[2, 2]
                    zero_shift = sx == 0 and sy == 0 and sz == 0
                    for p in range(starts[nb], starts[nb + 1]):
                        d0 = xa0 - sorted_pos[p, 0] - t0
                        d1 = xa1 - sorted_pos[p, 1] - t1
                        d2 = xa2 - sorted_pos[p, 2] - t2
                        r2 = d0 * d0 + d1 * d1 + d2 * d2
                        if r2 >= r2max:
                            continue
                        c = sorted_atoms[p]
                        if c == a and zero_shift:
                            continue
                        s0 = W[c, 0] - W[a, 0] - sx
                        s1 = W[c, 1] - W[a, 1] - sy
                        s2 = W[c, 2] - W[a, 2] - sz
                        # pair format: one table row, slots in order; dense: row a, slot = its count
                        r_out = a if dense else 0
                        k_out = row if dense else n_pairs
                        if k_out < slots:
                            senders[r_out, k_out] = c
                            receivers[r_out, k_out] = a
                            shifts[r_out, k_out, 0] = s0
                            shifts[r_out, k_out, 1] = s1
                            shifts[r_out, k_out, 2] = s2
                            mask[r_out, k_out] = True
                        row += 1
                        n_pairs += 1
        max_per_atom = max(max_per_atom, row)
    return n_pairs, max_per_atom, max_bin


@_njit
def _search_batch(positions, cells, inv_cells, grid, radius, n_valid, bin_capacity, dense,
                  senders, receivers, shifts, mask, n_pairs, max_per_atom, max_bin):
    for b in range(positions.shape[0]):
        n_pairs[b], max_per_atom[b], max_bin[b] = _search(
            positions[b], cells[b], inv_cells[b], grid, radius[b], n_valid[b], bin_capacity, dense,
            senders[b], receivers[b], shifts[b], mask[b])


def search(positions, cell, radius, n_valid, *, grid, bin_capacity, capacity, max_neighbours):
    """Host entry point (NumPy in, NumPy out), batched over any leading axes.

    Args:
        positions: (..., n, 3) Angstrom; cell: (..., 3, 3) Angstrom; radius: (...) Angstrom;
        n_valid: (...) int, atoms >= n_valid are padding.
        grid: bins per direction; bin_capacity: the layout's atoms per bin;
        capacity: pair capacity (pair format); max_neighbours: K of the dense format, or None.

    Returns:
        senders, receivers (..., capacity) or (..., n, K) int32; shifts (..., capacity, 3) int32;
        mask bool; n_pairs, max_per_atom, max_bin (...) int32 (exact even on overflow).
    """
    positions = np.asarray(positions, np.float64)
    lead = positions.shape[:-2]
    n = positions.shape[-2]
    pos = positions.reshape((-1, n, 3))
    B = pos.shape[0]
    cells = np.broadcast_to(np.asarray(cell, np.float64), lead + (3, 3)).reshape(B, 3, 3)
    inv = np.linalg.inv(cells)
    radius = np.broadcast_to(np.asarray(radius, np.float64), lead).reshape(B)
    n_valid = np.broadcast_to(np.asarray(n_valid, np.int64), lead).reshape(B)
    dense = max_neighbours is not None
    slots = (n, int(max_neighbours)) if dense else (1, int(capacity))
    senders = np.full((B,) + slots, n, np.int32)
    receivers = np.full((B,) + slots, n, np.int32)
    shifts = np.zeros((B,) + slots + (3,), np.int32)
    mask = np.zeros((B,) + slots, np.bool_)
    n_pairs = np.zeros(B, np.int64)
    per_atom = np.zeros(B, np.int64)
    max_bin = np.zeros(B, np.int64)
    _search_batch(pos, cells, inv, np.asarray(grid, np.int64), radius, n_valid, int(bin_capacity), dense,
                  senders, receivers, shifts, mask, n_pairs, per_atom, max_bin)
    table = slots if dense else slots[1:]
    shape = lambda a: a.reshape(lead + table + a.shape[3:])  # noqa: E731
    return (shape(senders), shape(receivers), shape(shifts), shape(mask),
            n_pairs.astype(np.int32).reshape(lead), per_atom.astype(np.int32).reshape(lead),
            max_bin.astype(np.int32).reshape(lead))
