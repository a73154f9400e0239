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
  (:func:`_build_cells_jnp`, candidate tables of 27 x bin_capacity slots compacted with
  ``nonzero``) is its tested reference and the GPU path. :func:`cells_kernel` selects.

Formats:

- pairs (default): the arrays have shape (capacity,) as described above;
- dense per-atom (``layout.max_neighbours = K``): the same pairs grouped by receiver into a
  (n_atoms, K) table, ``receivers[a, k] == a`` for every real slot (receiver-major, as message
  passing sums them: a model reduces over the K axis with dense matrix products instead of a
  scatter). The pairs of a row keep the pair order. An atom with more than K pairs sets
  ``overflow``, like a full pair list; :func:`reallocate` grows K. Flattening the arrays gives a
  valid (padded) pair list, so any pair-list consumer can read the dense format.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax import precision  # noqa: F401

_BRUTE_CHUNK_ELEMENTS = 1 << 21  # candidate pairs evaluated per scan step of the brute search


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


# ----------------------------------------------------------------------------------------
# geometry helpers (pure)


def _completed_cell(cell: jax.Array, pbc: tuple[bool, bool, bool]) -> jax.Array:
    """Cell with every non-periodic row replaced by a unit vector normal to the periodic rows.

    Positions are only wrapped and imaged along periodic rows, so the non-periodic rows may be
    anything that keeps the matrix invertible (ASE allows them to be zero).
    """
    periodic = [k for k in range(3) if pbc[k]]
    rows = [cell[k] for k in range(3)]
    if len(periodic) == 3:
        return cell
    eye = jnp.eye(3, dtype=cell.dtype)
    if len(periodic) == 0:
        return eye
    if len(periodic) == 2:
        a, b = rows[periodic[0]], rows[periodic[1]]
        n = jnp.cross(a, b)
        n = n / jnp.linalg.norm(n)
        (k,) = [k for k in range(3) if not pbc[k]]
        rows[k] = n
        return jnp.stack(rows)
    # one periodic direction: two unit vectors orthogonal to it and to each other
    a = rows[periodic[0]]
    ahat = a / jnp.linalg.norm(a)
    # pick the coordinate axis least parallel to a
    trial = eye[jnp.argmin(jnp.abs(ahat))]
    u = jnp.cross(ahat, trial)
    u = u / jnp.linalg.norm(u)
    v = jnp.cross(ahat, u)
    free = [k for k in range(3) if not pbc[k]]
    rows[free[0]], rows[free[1]] = u, v
    return jnp.stack(rows)


def plane_widths(cell: jax.Array) -> jax.Array:
    """(3,) distances between lattice planes, w_k = V / |a_l x a_m|, Angstrom."""
    volume = jnp.abs(jnp.linalg.det(cell))
    cross = jnp.stack(
        [jnp.cross(cell[1], cell[2]), jnp.cross(cell[2], cell[0]), jnp.cross(cell[0], cell[1])]
    )
    return volume / jnp.linalg.norm(cross, axis=1)


def _wrap(positions, full_cell, periodic):
    """Wrap positions into the cell along periodic directions.

    Args:
        full_cell: (3, 3) invertible cell (:func:`_completed_cell`).
        periodic: (3,) bool array.

    Returns:
        wrapped: (n, 3) positions - W @ cell.
        fractional: (n, 3) fractional coordinates of the wrapped positions (periodic ones in [0, 1)).
        W: (n, 3) int32 lattice translation removed from each atom.
    """
    frac = jnp.linalg.solve(full_cell.T, positions.T).T
    W = jnp.where(periodic, jnp.floor(frac), 0.0)
    frac = frac - W
    wrapped = positions - W @ full_cell
    return wrapped, frac, W.astype(jnp.int32)


def edge_vectors(positions: jax.Array, cell: jax.Array, neighbours: Neighbours, fill: float = 1e3):
    """Pair displacement vectors d_k = x[j] - x[i] + S_k @ cell, Angstrom.

    Args:
        positions: (n_atoms, 3) Angstrom.
        cell: (3, 3) Angstrom.
        neighbours: the pair list.
        fill: length of the vector put on padded entries (far beyond any cutoff, so smooth
            cutoff functions vanish there and gradients stay finite).

    Returns:
        (capacity, 3) displacement vectors (dense format: (n_atoms, K, 3)) in the dtype of
        ``positions``.
    """
    n = positions.shape[0]
    i = jnp.minimum(neighbours.senders, n - 1)
    j = jnp.minimum(neighbours.receivers, n - 1)
    d = positions[j] - positions[i] + neighbours.shifts.astype(positions.dtype) @ cell
    far = jnp.zeros_like(d).at[..., 0].set(fill)
    return jnp.where(neighbours.mask[..., None], d, far)


def _max_per_atom(receivers, mask, n_atoms: int):
    """() int32: the largest number of real pairs with the same receiver."""
    if n_atoms == 0:
        return jnp.zeros((), jnp.int32)
    counts = jax.ops.segment_sum(mask.astype(jnp.int32), jnp.where(mask, receivers, 0), num_segments=n_atoms)
    return jnp.max(counts)


def receiver_slots(receivers, mask, n_atoms: int, max_neighbours: int):
    """Pairs grouped by receiver: slot[a, k] = index of the k-th real pair received by atom a.

    Pure (integer work only; no gradient flows through it). Pair order is kept within a row.

    Args:
        receivers: (capacity,) int32; mask: (capacity,) bool, real pairs.
        n_atoms, max_neighbours: the table's static shape (n_atoms, K).

    Returns:
        (slot (n_atoms, K) int32 with ``capacity`` in empty slots, per_atom () int32 the largest row count;
        per_atom > K means the table overflowed).
    """
    cap = mask.shape[0]
    key = jnp.where(mask, receivers, n_atoms)
    order = jnp.argsort(key, stable=True).astype(jnp.int32)
    sorted_key = key[order]
    counts = jax.ops.segment_sum(mask.astype(jnp.int32), jnp.where(mask, receivers, 0), num_segments=n_atoms)
    starts = jnp.cumsum(counts) - counts
    rank = jnp.arange(cap, dtype=jnp.int32) - jnp.take(starts, jnp.minimum(sorted_key, n_atoms - 1))
    row = jnp.where(sorted_key < n_atoms, sorted_key, n_atoms)  # padding rows fall out of bounds (dropped)
    slot = jnp.full((n_atoms, max_neighbours), cap, jnp.int32).at[row, rank].set(order, mode="drop")
    return slot, jnp.max(counts)


def _to_dense(flat: Neighbours, n_atoms: int, max_neighbours: int) -> Neighbours:
    """The pair list grouped by receiver into (n_atoms, K) slots (pair order kept within a row)."""
    cap = flat.mask.shape[0]
    slot, per_atom = receiver_slots(flat.receivers, flat.mask, n_atoms, max_neighbours)
    mask = slot < cap
    pick = jnp.minimum(slot, cap - 1)
    return flat._replace(
        senders=jnp.where(mask, flat.senders[pick], n_atoms),
        receivers=jnp.where(mask, flat.receivers[pick], n_atoms),
        shifts=jnp.where(mask[..., None], flat.shifts[pick], 0),
        mask=mask,
        max_per_atom=per_atom,
        overflow=flat.overflow | (per_atom > max_neighbours),
    )


# ----------------------------------------------------------------------------------------
# compaction (pure)

_WORD_BITS = 32


def _select_bit(words, rank):
    """Position (0..31) of the rank-th (0-based) set bit of each uint32 word (5 popcount halvings)."""
    pos = jnp.zeros_like(rank)
    for width in (16, 8, 4, 2, 1):
        low = jax.lax.population_count(jnp.right_shift(words, pos.astype(jnp.uint32)) & jnp.uint32((1 << width) - 1))
        low = low.astype(rank.dtype)
        go = rank >= low
        rank = jnp.where(go, rank - low, rank)
        pos = jnp.where(go, pos + width, pos)
    return pos


def compact_indices(hit: jax.Array, size: int) -> jax.Array:
    """Indices of the first ``size`` True entries of ``hit`` in order, ``hit.size`` where fewer.

    ``jnp.nonzero(hit, size=size)`` without its scatter over every slot: the mask is packed into
    32-bit words, a cumulative popcount over the words (32x shorter than the mask) is searched for
    each output slot k (the word holding the k-th set bit), and the bit inside the word is found by
    popcount halving. Work: M/32 word sums + size * (log2(M/32) + 5) small-array lookups.

    Args:
        hit: (M,) bool.
        size: number of indices to return (static).

    Returns:
        (size,) int32.
    """
    m = hit.shape[0]
    pad = (-m) % _WORD_BITS
    bits = jnp.left_shift(jnp.uint32(1), jnp.arange(_WORD_BITS, dtype=jnp.uint32))
    words = jnp.sum(jnp.pad(hit, (0, pad)).reshape(-1, _WORD_BITS).astype(jnp.uint32) * bits, axis=1, dtype=jnp.uint32)
    per_word = jax.lax.population_count(words).astype(jnp.int32)
    ends = jnp.cumsum(per_word)
    k = jnp.arange(size, dtype=jnp.int32)
    w = jnp.searchsorted(ends, k, side="right", method="scan").astype(jnp.int32)
    wc = jnp.minimum(w, words.shape[0] - 1)
    index = wc * _WORD_BITS + _select_bit(words[wc], k - (ends[wc] - per_word[wc]))
    return jnp.where(w < words.shape[0], index, m).astype(jnp.int32)


# ----------------------------------------------------------------------------------------
# pure build / update


def _image_list(n_images: tuple[int, int, int]) -> np.ndarray:
    ranges = [range(-n, n + 1) for n in n_images]
    return np.array(list(itertools.product(*ranges)), dtype=np.int32).reshape(-1, 3)


def _empty(layout: NeighbourLayout, positions, cell) -> Neighbours:
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


def _image_chunks(n_images: tuple[int, int, int], n_atoms: int, min_steps: int = 1, bucket_rows: bool = False) -> np.ndarray:
    """Lattice translations to search, as (n_steps, per_step, 4) int32 rows (S, real flag).

    Rows with flag 0 pad the last step (and up to ``min_steps`` steps) and match nothing;
    ``bucket_rows`` pads ``per_step`` to a power of four, else of two, within the memory budget
    (fewer shapes).
    """
    images = _image_list(n_images)
    n_img = images.shape[0]
    limit = max(1, _BRUTE_CHUNK_ELEMENTS // max(1, n_atoms * n_atoms))
    per_step = max(1, min(n_img, limit))
    if bucket_rows:
        per_step = next((b for b in (_bucket4(per_step), _bucket(per_step)) if b <= limit), per_step)
    n_steps = max(min_steps, -(-n_img // per_step))
    padded = np.zeros((n_steps * per_step, 4), np.int32)
    padded[:n_img, :3] = images
    padded[:n_img, 3] = 1
    return padded.reshape(n_steps, per_step, 4)


def _build_brute(layout: NeighbourLayout, positions, cell) -> Neighbours:
    """All pairs x all lattice translations of ``layout.n_images``."""
    full = _completed_cell(cell, layout.pbc)
    chunks = jnp.asarray(_image_chunks(layout.n_images, layout.n_atoms))
    out = _brute_search(
        layout.capacity, positions, full, jnp.asarray(layout.pbc), chunks, None, layout.search_radius
    )
    return out._replace(reference_cell=cell)


def _brute_search(cap: int, positions, full, periodic, chunks, n_valid, radius) -> Neighbours:
    """Brute-force search with everything but the shapes traced (few compilations).

    Args:
        cap: pair capacity (static).
        positions: (n, 3) Angstrom.
        full: (3, 3) invertible cell (non-periodic rows completed), Angstrom.
        periodic: (3,) bool.
        chunks: (n_steps, per_step, 4) int32 translations from :func:`_image_chunks`.
        n_valid: atoms >= n_valid are padding (never paired), or None.
        radius: search radius, Angstrom.
    """
    n = positions.shape[0]
    r2max = radius * radius
    wrapped, _, W = _wrap(positions, full, periodic)
    per_step = chunks.shape[1]
    ii, jj = jnp.meshgrid(jnp.arange(n, dtype=jnp.int32), jnp.arange(n, dtype=jnp.int32), indexing="ij")
    atom_ok = jnp.ones((n,), bool) if n_valid is None else jnp.arange(n) < n_valid
    both_ok = (atom_ok[:, None] & atom_ok[None, :])[None]
    ii = jnp.broadcast_to(ii, (per_step, n, n)).reshape(-1)
    jj = jnp.broadcast_to(jj, (per_step, n, n)).reshape(-1)
    base = wrapped[None, :, :] - wrapped[:, None, :]  # (n, n, 3): x_j - x_i

    def step(carry, chunk):
        senders, receivers, shifts, count = carry
        s = chunk[:, :3]
        real = chunk[:, 3] == 1
        t = s.astype(positions.dtype) @ full  # (per_step, 3)
        # |x_j - x_i + t|^2 component by component: one fused elementwise pass, no (.., 3) temporary
        r2 = sum((base[None, :, :, a] + t[:, None, None, a]) ** 2 for a in range(3))  # (per_step, n, n)
        is_zero_shift = jnp.all(s == 0, axis=1)[:, None, None]
        self_pair = jnp.eye(n, dtype=bool)[None] & is_zero_shift
        hit = (r2 < r2max) & ~self_pair & real[:, None, None] & both_ok
        hit = hit.reshape(-1)
        # this chunk's pairs, compacted, written after the pairs found so far (the buffers hold
        # 2 x cap so the write of cap slots at any start <= cap fits; slots past this chunk's
        # count are padding the next chunk overwrites)
        found = compact_indices(hit, cap)
        ok = found < hit.shape[0]
        f = jnp.minimum(found, hit.shape[0] - 1)
        i, j = ii[f], jj[f]
        S = jnp.where(ok[:, None], s[f // (n * n)] - W[j] + W[i], 0)
        start = (jnp.minimum(count, cap),)
        senders = jax.lax.dynamic_update_slice(senders, jnp.where(ok, i, n), start)
        receivers = jax.lax.dynamic_update_slice(receivers, jnp.where(ok, j, n), start)
        shifts = jax.lax.dynamic_update_slice(shifts, S, start + (jnp.zeros((), jnp.int32),))
        return (senders, receivers, shifts, count + jnp.sum(hit, dtype=jnp.int32)), None

    init = (
        jnp.full((2 * cap,), n, jnp.int32),
        jnp.full((2 * cap,), n, jnp.int32),
        jnp.zeros((2 * cap, 3), jnp.int32),
        jnp.zeros((), jnp.int32),
    )
    (senders, receivers, shifts, count), _ = jax.lax.scan(step, init, chunks)
    senders, receivers, shifts = senders[:cap], receivers[:cap], shifts[:cap]
    needed = jnp.ceil(radius / plane_widths(full))
    rows = chunks.reshape(-1, 4)
    searched = jnp.max(jnp.where(rows[:, 3:] == 1, jnp.abs(rows[:, :3]), 0), axis=0)
    too_few_images = jnp.any(periodic & (needed > searched))
    mask = jnp.arange(cap) < count
    return Neighbours(
        senders=senders,
        receivers=receivers,
        shifts=shifts,
        mask=mask,
        n_pairs=count,
        max_per_atom=_max_per_atom(receivers, mask, n),
        overflow=(count > cap) | too_few_images,
        reference_positions=positions,
        reference_cell=full,
    )


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
    backend when Numba imports, "jnp" (:func:`_build_cells_jnp`, its tested reference) elsewhere
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


def _build_cells(layout: NeighbourLayout, positions, cell, n_valid=None, radius=None) -> Neighbours:
    """Cell-list search with the implementation :func:`cells_kernel` selects (pair or dense format)."""
    if cells_kernel(layout.kernel) == "numba":
        return _build_cells_numba(layout, positions, cell, n_valid, radius)
    flat = _build_cells_jnp(layout, positions, cell, n_valid, radius)
    if layout.max_neighbours is None:
        return flat
    return _to_dense(flat, layout.n_atoms, layout.max_neighbours)


def _build_cells_numba(layout: NeighbourLayout, positions, cell, n_valid=None, radius=None) -> Neighbours:
    """The cell list as a compiled CPU kernel (:func:`kernels.cell_list_cpu.search`).

    Same pairs as :func:`_build_cells_jnp` (receiver-major order, shifts in the module's
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


def _build_cells_jnp(layout: NeighbourLayout, positions, cell, n_valid=None, radius=None) -> Neighbours:
    """Cell-list search in pure jnp (pair format); ``n_valid`` (traced int) marks atoms >= n_valid
    as padding; ``radius`` (traced, A) replaces ``layout.search_radius`` so that one compiled
    search serves many cutoffs."""
    n, cap, bcap = layout.n_atoms, layout.capacity, layout.bin_capacity
    gx, gy, gz = layout.grid
    n_bins = gx * gy * gz
    radius = layout.search_radius if radius is None else radius
    r2max = radius**2
    wrapped, frac, W = _wrap(positions, cell, jnp.asarray(layout.pbc))  # fully periodic here
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
        max_per_atom=_max_per_atom(receivers, real, n),
        overflow=(count > cap) | (jnp.max(counts) > bcap) | bins_too_thin,
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
        flat = _empty(layout, positions, cell)
    elif layout.method == "cells":
        return _build_cells(layout, positions, cell)  # pair or dense format, as the layout says
    else:
        flat = _build_brute(layout, positions, cell)
    if layout.max_neighbours is None or layout.n_atoms == 0:
        return flat
    return _to_dense(flat, layout.n_atoms, layout.max_neighbours)


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


_build_jit = jax.jit(build, static_argnums=0)
_build_batch_jit = jax.jit(jax.vmap(build, in_axes=(None, 0, 0)), static_argnums=0)


# ----------------------------------------------------------------------------------------
# host side: validation, allocation, reallocation


def validate_geometry(positions, cell, pbc, cutoff: float | None = None) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Check positions, cell and cutoff; raise ValueError naming the problem.

    Returns:
        positions (n, 3) float64 array, cell (3, 3) float64 array, pbc as a tuple of 3 bools.
    """
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    pbc_arr = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    pbc = tuple(bool(p) for p in pbc_arr)
    if positions.ndim != 2 or positions.shape[-1] != 3:
        raise ValueError(f"positions must have shape (n_atoms, 3); got {positions.shape}")
    if cell.shape != (3, 3):
        raise ValueError(f"cell must have shape (3, 3); got {cell.shape}")
    if not np.all(np.isfinite(positions)):
        bad = np.unique(np.nonzero(~np.isfinite(positions))[0])
        raise ValueError(f"positions contain non-finite values (NaN or inf) for atom(s) {bad[:10].tolist()}")
    if not np.all(np.isfinite(cell)):
        raise ValueError(f"cell contains non-finite values: {cell.tolist()}")
    if cutoff is not None:
        if not np.isfinite(cutoff) or cutoff < 0:
            raise ValueError(f"cutoff must be a finite non-negative distance in Angstrom; got {cutoff}")
    periodic = [k for k in range(3) if pbc[k]]
    if periodic:
        rows = cell[periodic]
        # Gram determinant: volume (area, length) spanned by the periodic lattice vectors
        gram = np.linalg.det(rows @ rows.T)
        scale = np.prod(np.sum(rows * rows, axis=1))
        if not gram > 1e-20 * max(scale, 1e-300):
            raise ValueError(
                "cell has zero volume along its periodic directions "
                f"(pbc={pbc}, cell={cell.tolist()}): lattice vectors are zero or linearly dependent"
            )
    return positions, cell, pbc


def _estimate_capacity(n_atoms: int, volume: float, radius: float) -> int:
    density = n_atoms / max(volume, 1e-12)
    return max(16, int(1.3 * n_atoms * density * 4.0 / 3.0 * math.pi * radius**3))


def _choose_layout(positions, cell, pbc, cutoff, skin, method, capacity, bin_capacity) -> NeighbourLayout:
    n = positions.shape[0]
    radius = cutoff + skin
    full = np.asarray(_completed_cell(jnp.asarray(cell), pbc))
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
        bcap = bin_capacity or _bin_capacity(positions, cell, grid)
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
    full = np.asarray(_completed_cell(jnp.asarray(c0), pbc_t))
    capacity = _estimate_capacity(n, abs(np.linalg.det(full)) if all(pbc_t) else _box_volume(p0, full, pbc_t, cutoff + skin), cutoff + skin)
    layout = _choose_layout(p0, c0, pbc_t, cutoff, skin, method, capacity, 0)
    if batch:
        layout = _merge_layouts([_choose_layout(p, c, pbc_t, cutoff, skin, layout.method, capacity, 0) for p, c, _ in pairs])
    if max_neighbours is not None:
        # "auto" starts from one slot: the first build reports the fullest atom and K grows to it
        layout = dataclasses.replace(layout, max_neighbours=1 if max_neighbours == "auto" else int(max_neighbours))
    return reallocate(layout, pos_all, cell_all, capacity_factor=capacity_factor, batch=batch)


def _box_volume(positions, full_cell, pbc, radius) -> float:
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
    pos_list = positions if batch else positions[None]
    cell_list = cell if batch else cell[None]
    fresh = _merge_layouts(
        [
            _choose_layout(p, c, layout.pbc, layout.cutoff, layout.skin, "auto", layout.capacity, 0)
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


def _bucket(x: int) -> int:
    """Smallest power of two >= x (limits recompilation to few shapes)."""
    return 1 << (max(int(x), 1) - 1).bit_length()


def _bucket4(x: int) -> int:
    """Smallest power of four >= x."""
    b = _bucket(x)
    return b if b.bit_length() % 2 == 1 else 2 * b


def _bucket_down(x: int) -> int:
    """Largest of 1, 2, 3, 4, 6, 8, 12, 16, 24, ... not above x (bins at most 1.33x wider than needed)."""
    p = 1 << (max(int(x), 1).bit_length() - 1)
    return p + p // 2 if p >= 2 and p + p // 2 <= x else p


def _bin_capacity(positions, cell, grid) -> int:
    """Atoms per bin to allocate: the fullest bin of ``grid`` over the periodic ``cell`` + 25% + 2."""
    frac = np.linalg.solve(np.asarray(cell).T, np.asarray(positions).T).T
    frac -= np.floor(frac)
    b3 = np.clip(np.floor(frac * np.array(grid)).astype(int), 0, np.array(grid) - 1)
    ids = (b3[:, 0] * grid[1] + b3[:, 1]) * grid[2] + b3[:, 2]
    max_count = int(np.bincount(ids, minlength=int(np.prod(grid))).max()) if len(ids) else 0
    return with_headroom(max_count)


def _padded_build(layout: NeighbourLayout, positions, full, periodic, chunks, n_valid, radius) -> Neighbours:
    if layout.method == "cells":
        return _build_cells(layout, positions, full, n_valid, radius)
    return _brute_search(layout.capacity, positions, full, periodic, chunks, n_valid, radius)


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
    full = np.asarray(_completed_cell(jnp.asarray(cell), pbc))
    volume = abs(np.linalg.det(full)) if all(pbc) else _box_volume(positions, full, pbc, cutoff)
    capacity = _estimate_capacity(n, volume, cutoff)
    if method == "auto" and n <= 1024 and cells_kernel() == "jnp":
        # one-off host queries: the padded brute search (a few shapes shared by all structures up to
        # 1024 atoms, ~1e6 distances per image) beats compiling a cell list for each new grid
        method = "brute"
    layout = _choose_layout(positions, cell, pbc, float(cutoff), 0.0, method, capacity, 0)
    n_pad = max(16, _bucket(n))  # tiny systems share one padded size (16^2 pairs per image is trivial)
    padded = np.zeros((n_pad, 3))
    padded[:n] = positions
    for _ in range(3):
        # capacity in powers of 4 (pair arrays at most 4x too long, half as many compiled shapes)
        layout = dataclasses.replace(layout, n_atoms=n_pad, capacity=_bucket4(max(layout.capacity, 1024)))
        if layout.method == "brute":
            raw = _image_chunks(layout.n_images, n_pad, bucket_rows=True)
            chunks = _image_chunks(layout.n_images, n_pad, min_steps=_bucket(raw.shape[0]), bucket_rows=True)
            key = NeighbourLayout(n_pad, 0.0, 0.0, (True, True, True), layout.capacity, "brute")
        else:
            chunks = np.zeros((1, 1, 4), np.int32)
            # bucketed grid and bin capacity, radius traced: cells of other sizes and cutoffs share code
            grid = tuple(_bucket_down(g) for g in layout.grid)
            bcap = _bucket(max(layout.bin_capacity, _bin_capacity(positions, full, grid)))
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
