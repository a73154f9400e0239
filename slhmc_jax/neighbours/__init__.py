"""Neighbour lists in JAX, exact for any periodicity, including cells thinner than the cutoff.

Two halves, after jax-md:

- :func:`allocate` (host, NumPy control flow) inspects a configuration, picks the static
  layout (pair capacity, search method, image range or cell-list grid) and builds the list;
- :func:`build` and :func:`update` (pure, jit- and vmap-able, static shapes) rebuild or reuse
  it inside compiled code, and raise ``Neighbours.overflow`` instead of dropping pairs when
  the layout no longer fits. The caller (host) then calls :func:`reallocate`.

Pair convention (ASE's ``primitive_neighbor_list('ijS')``): pair ``k`` links atom
``i = senders[k]`` to atom ``j = receivers[k]`` through the displacement

    d_k = positions[j] - positions[i] + shifts[k] @ cell        (Angstrom)

with ``|d_k| < cutoff + skin``. The list is full (both ``(i, j, S)`` and ``(j, i, -S)``) and
contains an atom's own periodic images (``i == j``, ``S != 0``). Padded entries have
``mask == False`` and ``senders == receivers == n_atoms`` (scatters with ``mode='drop'`` or
``segment_sum(num_segments=n_atoms)`` ignore them; use :func:`edge_vectors` for displacements).

Search methods:

- ``"brute"``: all pairs times every lattice translation that can reach the cutoff,
  ``n_k = ceil(r / w_k)`` images per periodic direction (``w_k`` the distance between lattice
  planes). Exact for cells much smaller than the cutoff and for non-periodic directions.
  O(N^2 n_images).
- ``"cells"``: a cell list on fractional coordinates (fully periodic cells at least one search
  radius wide in every direction): O(N). On the CPU backend a compiled kernel
  (:mod:`kernels.cell_list_cpu`, Numba behind ``jax.pure_callback``) runs it, walking each of
  the 27 neighbouring bins once per atom and writing each pair once; the pure-jnp version
  (:func:`~slhmc_jax.neighbours.cell_list.build_cells_jnp`, candidate tables of 27 x bin_capacity
  slots compacted with ``nonzero``) is its tested reference and the GPU path. :func:`cells_kernel`
  selects.

Formats:

- pairs (default): the arrays have shape (capacity,) as described above;
- dense per-atom (``layout.max_neighbours = K``): the same pairs grouped by receiver into a
  (n_atoms, K) table, ``receivers[a, k] == a`` for every real slot (receiver-major, as message
  passing sums them: a model reduces over the K axis with dense matrix products instead of a
  scatter). The pairs of a row keep the pair order. An atom with more than K pairs sets
  ``overflow``, like a full pair list; :func:`reallocate` grows K. Flattening the arrays gives a
  valid (padded) pair list, so any pair-list consumer can read the dense format.

Modules (one job each; the names below are the package's public API, importable from here):

- ``types``: :class:`Neighbours`, :class:`NeighbourLayout`;
- ``geometry``: completed cells, :func:`plane_widths`, wrapping, :func:`edge_vectors`,
  :func:`validate_geometry` (host);
- ``compaction`` (:func:`compact_indices`), ``brute`` (the all-pairs search), ``cell_list``
  (:func:`cells_kernel` and the cell-list search), ``dense`` (:func:`receiver_slots`, the per-atom
  format), ``verlet`` (:func:`build`, :func:`needs_rebuild`, :func:`update`, :func:`update_batch`):
  the pure side;
- ``allocation`` (:func:`allocate`, :func:`reallocate`, :func:`reallocate_for`,
  :func:`with_headroom`): the host side;
- ``ase_pairs`` (:func:`neighbour_pairs`): one-off host queries of an ``ase.Atoms``;
  ``shapes``: the bucketed static sizes they share.
"""

from slhmc_jax import precision  # noqa: F401  (float64 enabled before any array is made)
from slhmc_jax.neighbours.allocation import allocate, reallocate, reallocate_for, with_headroom
from slhmc_jax.neighbours.ase_pairs import neighbour_pairs
from slhmc_jax.neighbours.cell_list import cells_kernel
from slhmc_jax.neighbours.compaction import compact_indices
from slhmc_jax.neighbours.dense import receiver_slots
from slhmc_jax.neighbours.geometry import edge_vectors, plane_widths, validate_geometry
from slhmc_jax.neighbours.types import NeighbourLayout, Neighbours
from slhmc_jax.neighbours.verlet import build, needs_rebuild, update, update_batch

__all__ = [
    "NeighbourLayout",
    "Neighbours",
    "allocate",
    "build",
    "cells_kernel",
    "compact_indices",
    "edge_vectors",
    "needs_rebuild",
    "neighbour_pairs",
    "plane_widths",
    "reallocate",
    "reallocate_for",
    "receiver_slots",
    "update",
    "update_batch",
    "validate_geometry",
    "with_headroom",
]
