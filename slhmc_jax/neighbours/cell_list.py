"""The cell-list search of fully periodic cells at least one search radius wide (pure): the compiled
CPU kernel (:mod:`kernels.cell_list_cpu` behind ``jax.pure_callback``) or its pure-jnp reference.
"""

from __future__ import annotations

import functools
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax.neighbours.compaction import compact_indices
from slhmc_jax.neighbours.dense import max_per_atom, to_dense
from slhmc_jax.neighbours.geometry import plane_widths, wrap
from slhmc_jax.neighbours.types import NeighbourLayout, Neighbours


@functools.lru_cache(maxsize=64)
def _bin_stencil(grid: tuple[int, int, int]):
    """For every bin, its 27 neighbouring bins and the lattice shift of each (static tables)."""
    gx, gy, gz = grid
    b = np.array(list(itertools.product(range(gx), range(gy), range(gz))), np.int64)
    offsets = np.array(list(itertools.product((-1, 0, 1), repeat=3)), np.int64)
    raw = b[:, None, :] + offsets[None, :, :]  # (n_bins, 27, 3)
    g = np.array(grid)
    shift = np.floor_divide(raw, g)
    nb = raw - shift * g
    nb_id = (nb[..., 0] * gy + nb[..., 1]) * gz + nb[..., 2]
    return nb_id.astype(np.int32), shift.astype(np.int32)


def cells_kernel(requested: str = "auto") -> str:
    """The implementation of the "cells" search that :func:`build` runs: "numba" or "jnp".

    "auto": "numba" (:mod:`kernels.cell_list_cpu`, through ``jax.pure_callback``) on the CPU
    backend when Numba imports, "jnp" (:func:`build_cells_jnp`, its tested reference) elsewhere
    (GPU); ``SLHMC_JAX_KERNELS=jnp`` in the environment forces the pure-jnp path. Read at trace
    time. Measured (benchmarks/neighbours.py, 2-core CPU): the kernel builds 576 / 4608 rutile
    atoms at 6 A in about 0.6x / 0.5x vesin's time, the pure-jnp cells search in about 25x.
    """
    if requested not in ("auto", "numba", "jnp"):
        raise ValueError(f"unknown cells kernel {requested!r}; expected 'auto', 'numba' or 'jnp'")
    if requested == "jnp":
        return "jnp"
    if requested == "numba":
        from kernels import cell_list_cpu

        if not cell_list_cpu.AVAILABLE:
            raise ImportError("kernel='numba' needs numba (pip install numba)")
        return "numba"
    if os.environ.get("SLHMC_JAX_KERNELS", "auto") == "jnp" or jax.default_backend() != "cpu":
        return "jnp"
    try:
        from kernels import cell_list_cpu
    except ImportError:
        return "jnp"
    return "numba" if cell_list_cpu.AVAILABLE else "jnp"


def build_cells(layout: NeighbourLayout, positions, cell, n_valid=None, radius=None) -> Neighbours:
    """Cell-list search with the implementation :func:`cells_kernel` selects (pair or dense format)."""
    if cells_kernel(layout.kernel) == "numba":
        return build_cells_numba(layout, positions, cell, n_valid, radius)
    flat = build_cells_jnp(layout, positions, cell, n_valid, radius)
    if layout.max_neighbours is None:
        return flat
    return to_dense(flat, layout.n_atoms, layout.max_neighbours)


def build_cells_numba(layout: NeighbourLayout, positions, cell, n_valid=None, radius=None) -> Neighbours:
    """The cell list as a compiled CPU kernel (:func:`kernels.cell_list_cpu.search`).

    Same pairs as :func:`build_cells_jnp` (receiver-major order, shifts in the module's
    convention), written straight into the pair or dense format. A bin never truncates here
    (the kernel walks each bin's atoms), so only the pair capacity, the dense slots and a cell
    too thin for its grid raise ``overflow``. No gradient flows through the integer outputs.
    """
    from kernels import cell_list_cpu

    n, cap, K = layout.n_atoms, layout.capacity, layout.max_neighbours
    radius = layout.search_radius if radius is None else radius
    n_valid = n if n_valid is None else n_valid
    slots = (n, K) if K is not None else (cap,)
    out_types = (
        jax.ShapeDtypeStruct(slots, jnp.int32),
        jax.ShapeDtypeStruct(slots, jnp.int32),
        jax.ShapeDtypeStruct(slots + (3,), jnp.int32),
        jax.ShapeDtypeStruct(slots, jnp.bool_),
        jax.ShapeDtypeStruct((), jnp.int32),
        jax.ShapeDtypeStruct((), jnp.int32),
        jax.ShapeDtypeStruct((), jnp.int32),
    )
    search = functools.partial(cell_list_cpu.search, grid=layout.grid, bin_capacity=layout.bin_capacity,
                               capacity=cap, max_neighbours=K)
    x, h = jax.lax.stop_gradient(positions), jax.lax.stop_gradient(cell)
    senders, receivers, shifts, mask, n_pairs, per_atom, _ = jax.pure_callback(
        search, out_types, x, h, jnp.asarray(radius, positions.dtype), jnp.asarray(n_valid, jnp.int32),
        vmap_method="broadcast_all",
    )
    widths = plane_widths(cell)
    bins_too_thin = jnp.any(widths / jnp.asarray(layout.grid) < radius)
    too_many = (per_atom > K) if K is not None else (n_pairs > cap)
    return Neighbours(
        senders=senders,
        receivers=receivers,
        shifts=shifts,
        mask=mask,
        n_pairs=n_pairs,
        max_per_atom=per_atom,
        overflow=too_many | bins_too_thin,
        reference_positions=positions,
        reference_cell=cell,
    )


def build_cells_jnp(layout: NeighbourLayout, positions, cell, n_valid=None, radius=None) -> Neighbours:
    """Cell-list search in pure jnp (pair format); ``n_valid`` (traced int) marks atoms >= n_valid
    as padding; ``radius`` (traced, A) replaces ``layout.search_radius`` so that one compiled
    search serves many cutoffs."""
    n, cap, bcap = layout.n_atoms, layout.capacity, layout.bin_capacity
    gx, gy, gz = layout.grid
    n_bins = gx * gy * gz
    radius = layout.search_radius if radius is None else radius
    r2max = radius**2
    wrapped, frac, W = wrap(positions, cell, jnp.asarray(layout.pbc))  # fully periodic here
    g = jnp.asarray(layout.grid)
    b3 = jnp.clip(jnp.floor(frac * g).astype(jnp.int32), 0, g - 1)
    bin_id = (b3[:, 0] * gy + b3[:, 1]) * gz + b3[:, 2]
    atom_ok = jnp.ones((n,), bool) if n_valid is None else jnp.arange(n) < n_valid
    bin_id = jnp.where(atom_ok, bin_id, n_bins)  # padding atoms go to a bin that is dropped
    order = jnp.argsort(bin_id, stable=True).astype(jnp.int32)
    sorted_bins = bin_id[order]
    counts = jnp.zeros((n_bins,), jnp.int32).at[bin_id].add(1, mode="drop")
    starts = jnp.cumsum(counts) - counts
    rank = jnp.arange(n, dtype=jnp.int32) - starts[sorted_bins]
    table = jnp.full((n_bins, bcap), n, jnp.int32)
    table = table.at[sorted_bins, rank].set(order, mode="drop")
    nb_id, nb_shift = _bin_stencil(layout.grid)
    nb_id, nb_shift = jnp.asarray(nb_id), jnp.asarray(nb_shift)

    # candidates of atom i: every slot of its 27 neighbouring bins
    home = jnp.minimum(bin_id, n_bins - 1)
    cand = table[nb_id[home]].reshape(n, 27 * bcap)  # (n, 27*bcap)
    s = jnp.repeat(nb_shift[home], bcap, axis=1)  # (n, 27*bcap, 3)
    valid = (cand < n) & atom_ok[:, None]
    jc = jnp.minimum(cand, n - 1)
    d = wrapped[jc] - wrapped[:, None, :] + s.astype(positions.dtype) @ cell
    r2 = jnp.sum(d * d, axis=-1)
    i_idx = jnp.arange(n, dtype=jnp.int32)[:, None]
    self_pair = (jc == i_idx) & jnp.all(s == 0, axis=-1)
    hit = (valid & (r2 < r2max) & ~self_pair).reshape(-1)
    count = jnp.sum(hit, dtype=jnp.int32)
    flat = compact_indices(hit, cap)
    real = flat < hit.shape[0]
    flat_c = jnp.minimum(flat, hit.shape[0] - 1)
    senders = jnp.where(real, flat_c // (27 * bcap), n).astype(jnp.int32)
    receivers = jnp.where(real, cand.reshape(-1)[flat_c], n).astype(jnp.int32)
    S = s.reshape(-1, 3)[flat_c]
    si, sj = jnp.minimum(senders, n - 1), jnp.minimum(receivers, n - 1)
    S = jnp.where(real[:, None], S - W[sj] + W[si], 0)

    widths = plane_widths(cell)
    bins_too_thin = jnp.any(widths / g < radius)
    return Neighbours(
        senders=senders,
        receivers=receivers,
        shifts=S.astype(jnp.int32),
        mask=real,
        n_pairs=count,
        max_per_atom=max_per_atom(receivers, real, n),
        overflow=(count > cap) | (jnp.max(counts) > bcap) | bins_too_thin,
        reference_positions=positions,
        reference_cell=cell,
    )
