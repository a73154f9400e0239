"""The dense per-atom format: pairs grouped by receiver into (n_atoms, K) slots (pure).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from slhmc_jax.neighbours.types import Neighbours


def max_per_atom(receivers, mask, n_atoms: int):
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


def to_dense(flat: Neighbours, n_atoms: int, max_neighbours: int) -> Neighbours:
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
