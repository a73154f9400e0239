"""Stream compaction for the pair searches: the indices of the True entries of a mask (pure).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


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
