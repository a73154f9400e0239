"""The host side of the neighbour list: choose a static layout, build, and grow it until nothing
overflows (jax-md's ``allocate``; NumPy control flow, never traced).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax.neighbours.cell_list import cells_kernel
from slhmc_jax.neighbours.geometry import completed_cell, plane_widths, validate_geometry
from slhmc_jax.neighbours.types import NeighbourLayout, Neighbours
from slhmc_jax.neighbours.verlet import build


_build_jit = jax.jit(build, static_argnums=0)
_build_batch_jit = jax.jit(jax.vmap(build, in_axes=(None, 0, 0)), static_argnums=0)

def estimate_capacity(n_atoms: int, volume: float, radius: float) -> int:
    """Pair capacity for ``n_atoms`` at uniform density in ``volume`` (A^3): 1.3 x the pairs within
    ``radius`` (A) of every atom, at least 16."""
    density = n_atoms / max(volume, 1e-12)
    return max(16, int(1.3 * n_atoms * density * 4.0 / 3.0 * math.pi * radius**3))


def choose_layout(positions, cell, pbc, cutoff, skin, method, capacity, bin_capacity) -> NeighbourLayout:
    """The static layout of one configuration: the search method ("auto": cells where the cell allows
    it and the kernel pays), its grid and bin capacity or its image range, and ``capacity``."""
    n = positions.shape[0]
    radius = cutoff + skin
    full = np.asarray(completed_cell(jnp.asarray(cell), pbc))
    widths = np.asarray(plane_widths(jnp.asarray(full)))
    grid = tuple(int(max(1, math.floor(w / radius))) if radius > 0 else 1 for w in widths)
    # bins at least one search radius wide: the 27 neighbouring (bin, shift) pairs are distinct
    # images even for 1 or 2 bins along a direction, so any cell at least `radius` wide works
    can_bin = all(pbc) and radius > 0 and min(widths) >= radius
    if method == "auto":
        # measured (benchmarks/neighbours.py): the compiled CPU cell list beats the all-pairs
        # search from the smallest cell it can bin (72 rutile atoms at 6 A: 1.4 vs 8.3 ms); the
        # pure-jnp cell list only once the all-pairs search is several times the binned one
        method = "cells" if can_bin and (n > 400 or cells_kernel() == "numba") else "brute"
    if method == "cells" and not can_bin:
        raise ValueError(
            "method='cells' needs a fully periodic cell at least one search radius wide in every "
            f"direction (widths {np.round(widths, 3).tolist()} A, radius {radius} A); use method='brute'"
        )
    if method not in ("brute", "cells"):
        raise ValueError(f"unknown neighbour search method {method!r}; expected 'auto', 'brute' or 'cells'")
    if method == "cells":
        bcap = bin_capacity or fullest_bin_capacity(positions, cell, grid)
        return NeighbourLayout(n, float(cutoff), float(skin), pbc, int(capacity), "cells", (0, 0, 0), grid, bcap)
    n_images = tuple(int(math.ceil(radius / w)) if (pbc[k] and radius > 0) else 0 for k, w in enumerate(widths))
    return NeighbourLayout(n, float(cutoff), float(skin), pbc, int(capacity), "brute", n_images)


def allocate(
    positions,
    cell,
    pbc,
    cutoff: float,
    skin: float = 0.0,
    *,
    method: str = "auto",
    capacity_factor: float = 1.25,
    batch: bool = False,
    max_neighbours: int | str | None = None,
) -> tuple[NeighbourLayout, Neighbours]:
    """Choose a layout on the host and build the list (jax-md's ``allocate``).

    Args:
        positions: (n_atoms, 3) Angstrom, or (n_chains, n_atoms, 3) with ``batch=True``.
        cell: (3, 3) Angstrom, or (n_chains, 3, 3) with ``batch=True``.
        pbc: bool or 3 bools.
        cutoff: Angstrom (>= 0).
        skin: Verlet skin, Angstrom (>= 0).
        method: "auto", "brute" or "cells".
        capacity_factor: headroom over the pairs found now (> 1 leaves room for fluctuations).
        batch: positions and cells carry a leading chain axis; one layout serves all chains.
        max_neighbours: None (pair format), K (dense per-atom format with K slots), or "auto"
            (dense, K from the fullest atom now with the same headroom as the pair capacity).

    Returns:
        (layout, neighbours); neighbours has a leading chain axis with ``batch=True``.
    """
    if not skin >= 0 or not np.isfinite(skin):
        raise ValueError(f"skin must be a finite non-negative distance in Angstrom; got {skin}")
    if capacity_factor < 1:
        raise ValueError(f"capacity_factor must be >= 1; got {capacity_factor}")
    if not (max_neighbours is None or max_neighbours == "auto" or (int(max_neighbours) == max_neighbours and max_neighbours >= 1)):
        raise ValueError(f"max_neighbours must be None, 'auto' or a positive integer; got {max_neighbours!r}")
    pos_all = np.asarray(positions, np.float64)
    cell_all = np.asarray(cell, np.float64)
    if batch:
        if pos_all.ndim != 3 or cell_all.ndim != 3 or cell_all.shape[0] != pos_all.shape[0]:
            raise ValueError(
                f"batch=True needs positions (n_chains, n_atoms, 3) and cells (n_chains, 3, 3); "
                f"got {pos_all.shape} and {cell_all.shape}"
            )
        pairs = [validate_geometry(p, c, pbc, cutoff) for p, c in zip(pos_all, cell_all)]
    else:
        pairs = [validate_geometry(pos_all, cell_all, pbc, cutoff)]
    p0, c0, pbc_t = pairs[0]
    n = p0.shape[0]
    full = np.asarray(completed_cell(jnp.asarray(c0), pbc_t))
    capacity = estimate_capacity(n, abs(np.linalg.det(full)) if all(pbc_t) else box_volume(p0, full, pbc_t, cutoff + skin), cutoff + skin)
    layout = choose_layout(p0, c0, pbc_t, cutoff, skin, method, capacity, 0)
    if batch:
        layout = _merge_layouts([choose_layout(p, c, pbc_t, cutoff, skin, layout.method, capacity, 0) for p, c, _ in pairs])
    if max_neighbours is not None:
        # "auto" starts from one slot: the first build reports the fullest atom and K grows to it
        layout = dataclasses.replace(layout, max_neighbours=1 if max_neighbours == "auto" else int(max_neighbours))
    return reallocate(layout, pos_all, cell_all, capacity_factor=capacity_factor, batch=batch)


def box_volume(positions, full_cell, pbc, radius) -> float:
    """Volume of the region the atoms occupy, for a capacity estimate of partly periodic systems."""
    if positions.shape[0] == 0:
        return 1.0
    frac = np.linalg.solve(full_cell.T, positions.T).T
    lengths = np.linalg.norm(full_cell, axis=1)
    extent = []
    for k in range(3):
        if pbc[k]:
            extent.append(lengths[k])
        else:
            extent.append(max(np.ptp(frac[:, k]) * lengths[k], radius))
    return float(np.prod(extent))


def _merge_layouts(layouts: list[NeighbourLayout]) -> NeighbourLayout:
    """One layout that serves every chain: the most images, the coarsest grid, the largest capacities."""
    first = layouts[0]
    n_images = tuple(max(l.n_images[k] for l in layouts) for k in range(3))
    grid = tuple(min(l.grid[k] for l in layouts) for k in range(3))
    bcap = max(l.bin_capacity for l in layouts)
    cap = max(l.capacity for l in layouts)
    return dataclasses.replace(first, n_images=n_images, grid=grid, bin_capacity=bcap, capacity=cap)


def with_headroom(count: int, capacity_factor: float = 1.25) -> int:
    """The capacity to allocate for ``count`` items: ceil(capacity_factor * count) + 2.

    The one growth rule of every capacity here (pairs, slots per atom); a bin capacity uses it too.
    """
    return int(math.ceil(capacity_factor * int(count))) + 2


def reallocate(
    layout: NeighbourLayout,
    positions,
    cell,
    *,
    capacity_factor: float = 1.25,
    batch: bool = False,
    max_tries: int = 8,
) -> tuple[NeighbourLayout, Neighbours]:
    """Rebuild on the host, growing the layout until nothing overflows (no pair is ever lost).

    Grows the pair capacity and the dense slots per atom (:func:`with_headroom` of the counts
    found), the bin capacity for a full bin, and the image range or grid for a cell that
    changed shape.
    """
    positions = jnp.asarray(positions)
    cell = jnp.asarray(cell)
    fn = _build_batch_jit if batch else _build_jit
    for _ in range(max_tries):
        nbrs = fn(layout, positions, cell)
        overflow = np.asarray(nbrs.overflow)
        if not overflow.any():
            return layout, nbrs
        layout = _grown(layout, np.asarray(positions), np.asarray(cell), np.max(np.asarray(nbrs.n_pairs)),
                        np.max(np.asarray(nbrs.max_per_atom)), capacity_factor, batch)
    raise RuntimeError(f"neighbour list still overflows after {max_tries} reallocations: {layout}")


def reallocate_for(layout: NeighbourLayout, positions, cell, seen_pairs: int, seen_per_atom: int, *,
                   capacity_factor: float = 1.25, batch: bool = False) -> NeighbourLayout:
    """A layout for lists that overflowed somewhere inside a trajectory started at ``positions``.

    ``seen_pairs`` and ``seen_per_atom`` are the largest ``n_pairs`` and ``max_per_atom`` any
    build of the trajectory reported (they are exact even on overflow); the layout grows to hold
    them and whatever the start needs. If that changes nothing, the overflow came from something
    the counts do not show (a cell-list bin that filled up, too few images): the bin capacity
    doubles, or one more image is searched along each periodic direction.
    """
    new, _ = reallocate(layout, positions, cell, capacity_factor=capacity_factor, batch=batch)
    grown = _grown(new, np.asarray(positions), np.asarray(cell), int(seen_pairs),
                   int(seen_per_atom), capacity_factor, batch)
    if grown == layout:
        if layout.method == "cells":
            grown = dataclasses.replace(grown, bin_capacity=2 * layout.bin_capacity)
        else:
            grown = dataclasses.replace(grown, n_images=tuple(n + 1 if p else 0 for n, p in zip(layout.n_images, layout.pbc)))
    return grown


def _grown(layout, positions, cell, n_pairs, per_atom, capacity_factor, batch) -> NeighbourLayout:
    """``layout`` grown to hold ``n_pairs`` pairs and ``per_atom`` slots and to search the cells now
    given (image range, grid or method), never shrunk."""
    pos_list = positions if batch else positions[None]
    cell_list = cell if batch else cell[None]
    fresh = _merge_layouts(
        [
            choose_layout(p, c, layout.pbc, layout.cutoff, layout.skin, "auto", layout.capacity, 0)
            for p, c in zip(pos_list, cell_list)
        ]
    )
    capacity = max(layout.capacity, with_headroom(n_pairs, capacity_factor))
    if layout.max_neighbours is not None and per_atom > layout.max_neighbours:
        layout = dataclasses.replace(layout, max_neighbours=with_headroom(per_atom, capacity_factor))
    fresh = dataclasses.replace(fresh, max_neighbours=layout.max_neighbours)
    if layout.method == "cells" and fresh.method == "cells":
        grid = tuple(min(a, b) for a, b in zip(layout.grid, fresh.grid))
        bcap = max(layout.bin_capacity, fresh.bin_capacity)
        if grid != layout.grid:
            bcap = max(bcap, int(math.ceil(layout.bin_capacity * np.prod(layout.grid) / np.prod(grid))))
        return dataclasses.replace(layout, capacity=capacity, grid=grid, bin_capacity=bcap)
    if layout.method == "cells":
        # the cell no longer holds three bins per direction: fall back to the exact all-pairs search
        return dataclasses.replace(fresh, capacity=capacity)
    n_images = tuple(max(a, b) for a, b in zip(layout.n_images, fresh.n_images))
    return dataclasses.replace(layout, capacity=capacity, n_images=n_images)

def fullest_bin_capacity(positions, cell, grid) -> int:
    """Atoms per bin to allocate: the fullest bin of ``grid`` over the periodic ``cell`` + 25% + 2."""
    frac = np.linalg.solve(np.asarray(cell).T, np.asarray(positions).T).T
    frac -= np.floor(frac)
    b3 = np.clip(np.floor(frac * np.array(grid)).astype(int), 0, np.array(grid) - 1)
    ids = (b3[:, 0] * grid[1] + b3[:, 1]) * grid[2] + b3[:, 2]
    max_count = int(np.bincount(ids, minlength=int(np.prod(grid))).max()) if len(ids) else 0
    return with_headroom(max_count)
