"""Build and the Verlet-skin update inside compiled code (pure, jit- and vmap-able, static shapes).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from slhmc_jax.neighbours.brute import build_brute
from slhmc_jax.neighbours.cell_list import build_cells
from slhmc_jax.neighbours.dense import to_dense
from slhmc_jax.neighbours.types import NeighbourLayout, Neighbours


def empty_list(layout: NeighbourLayout, positions, cell) -> Neighbours:
    """A list with no pairs (every slot padding), for zero atoms or zero capacity."""
    cap, n = layout.capacity, layout.n_atoms
    return Neighbours(
        senders=jnp.full((cap,), n, jnp.int32),
        receivers=jnp.full((cap,), n, jnp.int32),
        shifts=jnp.zeros((cap, 3), jnp.int32),
        mask=jnp.zeros((cap,), bool),
        n_pairs=jnp.zeros((), jnp.int32),
        max_per_atom=jnp.zeros((), jnp.int32),
        overflow=jnp.zeros((), bool),
        reference_positions=positions,
        reference_cell=cell,
    )

def build(layout: NeighbourLayout, positions: jax.Array, cell: jax.Array) -> Neighbours:
    """Build the pair list from scratch (pure; jit with ``layout`` static, vmap over chains).

    Args:
        layout: static layout from :func:`allocate`.
        positions: (n_atoms, 3) Angstrom.
        cell: (3, 3) Angstrom (rows are lattice vectors).

    Returns:
        Neighbours (pair or dense format, as the layout says); check ``overflow`` on the host
        and call :func:`reallocate` if set.
    """
    if layout.n_atoms == 0 or layout.capacity == 0:
        flat = empty_list(layout, positions, cell)
    elif layout.method == "cells":
        return build_cells(layout, positions, cell)  # pair or dense format, as the layout says
    else:
        flat = build_brute(layout, positions, cell)
    if layout.max_neighbours is None or layout.n_atoms == 0:
        return flat
    return to_dense(flat, layout.n_atoms, layout.max_neighbours)


def needs_rebuild(layout: NeighbourLayout, positions: jax.Array, cell: jax.Array, neighbours: Neighbours):
    """True if the list may miss a pair: an atom moved more than skin/2, or the cell changed.

    Equation: every pair with |d| < cutoff now had |d| < cutoff + skin at the reference
    positions when max_i |x_i - x_i^ref| <= skin / 2 (triangle inequality, same S and cell).
    """
    disp = positions - neighbours.reference_positions
    max_disp2 = jnp.max(jnp.sum(disp * disp, axis=-1)) if layout.n_atoms else jnp.zeros(())
    moved = max_disp2 > (0.5 * layout.skin) ** 2
    cell_changed = jnp.any(cell != neighbours.reference_cell)
    return moved | cell_changed


def update(layout: NeighbourLayout, positions: jax.Array, cell: jax.Array, neighbours: Neighbours) -> Neighbours:
    """Reuse the list if the skin still covers every pair, otherwise rebuild (pure, jit-able).

    For many chains call :func:`update_batch` rather than ``vmap(update)``: under vmap the
    branch becomes a select and every chain would rebuild every step.
    """
    return jax.lax.cond(
        needs_rebuild(layout, positions, cell, neighbours),
        lambda: build(layout, positions, cell),
        lambda: neighbours,
    )


def update_batch(layout: NeighbourLayout, positions: jax.Array, cells: jax.Array, neighbours: Neighbours) -> Neighbours:
    """:func:`update` for a batch of chains; rebuilds (all chains) only if some chain needs it.

    Args:
        positions: (n_chains, n_atoms, 3) Angstrom.
        cells: (n_chains, 3, 3) Angstrom.
        neighbours: Neighbours with a leading chain axis.
    """
    need = jax.vmap(lambda x, c, nb: needs_rebuild(layout, x, c, nb))(positions, cells, neighbours)

    def rebuild():
        fresh = jax.vmap(lambda x, c: build(layout, x, c))(positions, cells)
        return jax.tree_util.tree_map(
            lambda new, old: jnp.where(need.reshape((-1,) + (1,) * (new.ndim - 1)), new, old), fresh, neighbours
        )

    return jax.lax.cond(jnp.any(need), rebuild, lambda: neighbours)
