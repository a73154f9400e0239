"""The all-pairs search over every lattice translation that can reach the search radius (pure).

Exact for any periodicity, including cells thinner than the cutoff: n_k = ceil(r / w_k) images
per periodic direction (w_k the distance between lattice planes). O(N^2 n_images).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax.neighbours.compaction import compact_indices
from slhmc_jax.neighbours.dense import max_per_atom
from slhmc_jax.neighbours.geometry import completed_cell, plane_widths, wrap
from slhmc_jax.neighbours.shapes import bucket_pow2, bucket_pow4
from slhmc_jax.neighbours.types import NeighbourLayout, Neighbours

_BRUTE_CHUNK_ELEMENTS = 1 << 21  # candidate pairs evaluated per scan step of the brute search


def _image_list(n_images: tuple[int, int, int]) -> np.ndarray:
    """(n_images, 3) int32: every lattice translation S with |S_k| <= n_images[k]."""
    ranges = [range(-n, n + 1) for n in n_images]
    return np.array(list(itertools.product(*ranges)), dtype=np.int32).reshape(-1, 3)

def image_chunks(n_images: tuple[int, int, int], n_atoms: int, min_steps: int = 1, bucket_rows: bool = False) -> np.ndarray:
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
        per_step = next((b for b in (bucket_pow4(per_step), bucket_pow2(per_step)) if b <= limit), per_step)
    n_steps = max(min_steps, -(-n_img // per_step))
    padded = np.zeros((n_steps * per_step, 4), np.int32)
    padded[:n_img, :3] = images
    padded[:n_img, 3] = 1
    return padded.reshape(n_steps, per_step, 4)


def build_brute(layout: NeighbourLayout, positions, cell) -> Neighbours:
    """All pairs x all lattice translations of ``layout.n_images``."""
    full = completed_cell(cell, layout.pbc)
    chunks = jnp.asarray(image_chunks(layout.n_images, layout.n_atoms))
    out = brute_search(
        layout.capacity, positions, full, jnp.asarray(layout.pbc), chunks, None, layout.search_radius
    )
    return out._replace(reference_cell=cell)


def brute_search(cap: int, positions, full, periodic, chunks, n_valid, radius) -> Neighbours:
    """Brute-force search with everything but the shapes traced (few compilations).

    Args:
        cap: pair capacity (static).
        positions: (n, 3) Angstrom.
        full: (3, 3) invertible cell (non-periodic rows completed), Angstrom.
        periodic: (3,) bool.
        chunks: (n_steps, per_step, 4) int32 translations from :func:`image_chunks`.
        n_valid: atoms >= n_valid are padding (never paired), or None.
        radius: search radius, Angstrom.
    """
    n = positions.shape[0]
    r2max = radius * radius
    wrapped, _, W = wrap(positions, full, periodic)
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
        max_per_atom=max_per_atom(receivers, mask, n),
        overflow=(count > cap) | too_few_images,
        reference_positions=positions,
        reference_cell=full,
    )
