"""The neighbour list and its static layout: :class:`Neighbours` (a pytree of fixed-shape arrays)
and :class:`NeighbourLayout` (hashable, a jit static argument). Conventions: :mod:`slhmc_jax.neighbours`.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax


class Neighbours(NamedTuple):
    """A fixed-capacity pair list (a pytree; vmap adds a leading chain axis to every leaf).

    Shapes are given for the pair format; in the dense format (n_atoms, K) replaces (capacity,).

    Attributes:
        senders: (capacity,) int32, atom i of each pair (n_atoms where padded).
        receivers: (capacity,) int32, atom j of each pair (n_atoms where padded).
        shifts: (capacity, 3) int32, integer lattice translation S of each pair.
        mask: (capacity,) bool, True for real pairs.
        n_pairs: () int32, pairs found by the last build (may exceed capacity on overflow).
        max_per_atom: () int32, the largest number of pairs any atom receives (may exceed K).
        overflow: () bool, True if the last build did not fit the layout (too many pairs,
            an atom with more than K pairs, a full cell-list bin, or a cell that shrank below
            the searched image range).
        reference_positions: (n_atoms, 3) positions of the last build, Angstrom.
        reference_cell: (3, 3) cell of the last build, Angstrom.
    """

    senders: jax.Array
    receivers: jax.Array
    shifts: jax.Array
    mask: jax.Array
    n_pairs: jax.Array
    max_per_atom: jax.Array
    overflow: jax.Array
    reference_positions: jax.Array
    reference_cell: jax.Array

    @property
    def is_dense(self) -> bool:
        """True for the per-atom (n_atoms, K) format (static: read from the array rank)."""
        return self.mask.ndim - self.reference_positions.ndim == 0

@dataclasses.dataclass(frozen=True)
class NeighbourLayout:
    """Static description of a neighbour list (hashable: a jit static argument).

    Attributes:
        n_atoms: number of atoms.
        cutoff: interaction cutoff, Angstrom.
        skin: Verlet skin, Angstrom; pairs are kept up to cutoff + skin and the list is
            reused while no atom has moved more than skin / 2 and the cell is unchanged.
        pbc: periodicity of the three lattice directions.
        capacity: maximum number of pairs.
        method: "brute" or "cells".
        n_images: brute search: lattice translations searched per direction (0 if not periodic).
        grid: cells search: number of bins along each lattice direction.
        bin_capacity: cells search: maximum atoms per bin.
        max_neighbours: K of the dense per-atom format (pairs per receiving atom), or None for
            the pair format.
        kernel: cells search implementation: "auto" (:func:`cells_kernel` decides), "numba"
            (the compiled CPU kernel) or "jnp" (the pure-jnp reference).
    """

    n_atoms: int
    cutoff: float
    skin: float
    pbc: tuple[bool, bool, bool]
    capacity: int
    method: str = "brute"
    n_images: tuple[int, int, int] = (0, 0, 0)
    grid: tuple[int, int, int] = (1, 1, 1)
    bin_capacity: int = 0
    max_neighbours: int | None = None
    kernel: str = "auto"

    @property
    def search_radius(self) -> float:
        """cutoff + skin, Angstrom."""
        return self.cutoff + self.skin
