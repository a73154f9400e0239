"""Bucketed static sizes: few distinct array shapes, so few compilations.
"""

from __future__ import annotations




def bucket_pow2(x: int) -> int:
    """Smallest power of two >= x (limits recompilation to few shapes)."""
    return 1 << (max(int(x), 1) - 1).bit_length()


def bucket_pow4(x: int) -> int:
    """Smallest power of four >= x."""
    b = bucket_pow2(x)
    return b if b.bit_length() % 2 == 1 else 2 * b


def bucket_down(x: int) -> int:
    """Largest of 1, 2, 3, 4, 6, 8, 12, 16, 24, ... not above x (bins at most 1.33x wider than needed)."""
    p = 1 << (max(int(x), 1).bit_length() - 1)
    return p + p // 2 if p >= 2 and p + p // 2 <= x else p
