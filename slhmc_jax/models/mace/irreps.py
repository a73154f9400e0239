"""Irreps bookkeeping and coupling coefficients in the e3nn (torch) conventions that mace-torch uses.

An irrep is a pair ``(l, p)``: degree l >= 0 and parity p = +1 ("e") or -1 ("o"); its dimension is
2l + 1. Irreps lists are sorted by ``(l, p)`` (so ``0o`` before ``0e``), which is the order of
``e3nn.o3.Irreps.sort`` and therefore the memory layout of mace-torch features.

The real spherical harmonics come from e3nn-jax and equal those of e3nn 0.4 (torch); the Wigner 3j
symbols of the two libraries differ by an overall sign for some (l1, l2, l3), tabulated in
``w3j_signs`` (both checked in ``tests/test_mace.py``), so parameters move between the two
libraries without any change of basis.
"""

from __future__ import annotations

import functools
import itertools
import re
from typing import NamedTuple

import numpy as np

Irrep = tuple  # (l, p)


class MulIrrep(NamedTuple):
    """``mul`` copies of irrep ``(l, p)``."""

    mul: int
    l: int
    p: int

    @property
    def ir(self) -> tuple[int, int]:
        return (self.l, self.p)

    @property
    def dim(self) -> int:
        return self.mul * (2 * self.l + 1)


def parse(irreps) -> tuple[MulIrrep, ...]:
    """``"128x0e+64x1o"`` (or a sequence of (mul, l, p)) -> tuple of MulIrrep, in the given order."""
    if isinstance(irreps, (tuple, list)):
        return tuple(MulIrrep(int(m), int(l), int(p)) for m, l, p in irreps)
    text = str(irreps).replace(" ", "")
    if not text:
        return ()
    out = []
    for term in text.split("+"):
        match = re.fullmatch(r"(?:(\d+)x)?(\d+)([eoy])", term)
        if match is None:
            raise ValueError(f"cannot read irreps term {term!r} in {irreps!r}; expected e.g. '128x0e+64x1o'")
        mul = int(match.group(1) or 1)
        l = int(match.group(2))
        p = {"e": 1, "o": -1, "y": (-1) ** l}[match.group(3)]
        out.append(MulIrrep(mul, l, p))
    return tuple(out)


def to_string(irreps) -> str:
    return "+".join(f"{m.mul}x{m.l}{'e' if m.p == 1 else 'o'}" for m in parse(irreps))


def dim(irreps) -> int:
    return sum(m.dim for m in parse(irreps))


def sort_key(ir: tuple[int, int]):
    """e3nn-torch order: by l, then odd before even."""
    return (ir[0], ir[1])


def sort(irreps) -> tuple[tuple[MulIrrep, ...], tuple[int, ...]]:
    """Stable sort by (l, p). Returns (sorted irreps, perm) with perm[i_old] = i_new."""
    irreps = parse(irreps)
    order = sorted(range(len(irreps)), key=lambda i: sort_key(irreps[i].ir))
    perm = [0] * len(irreps)
    for new, old in enumerate(order):
        perm[old] = new
    return tuple(irreps[i] for i in order), tuple(perm)


def simplify(irreps) -> tuple[MulIrrep, ...]:
    """Merge neighbouring entries of the same irrep."""
    out: list[MulIrrep] = []
    for m in parse(irreps):
        if out and out[-1].ir == m.ir:
            out[-1] = MulIrrep(out[-1].mul + m.mul, m.l, m.p)
        elif m.mul > 0:
            out.append(m)
    return tuple(out)


def product(ir1, ir2) -> list[tuple[int, int]]:
    """Irreps in ir1 x ir2: l from |l1 - l2| to l1 + l2, parity p1 p2."""
    (l1, p1), (l2, p2) = ir1, ir2
    return [(l, p1 * p2) for l in range(abs(l1 - l2), l1 + l2 + 1)]


def spherical_harmonics_irreps(max_ell: int) -> tuple[MulIrrep, ...]:
    """1x0e + 1x1o + 1x2e + ... up to max_ell (parity (-1)^l)."""
    return tuple(MulIrrep(1, l, (-1) ** l) for l in range(max_ell + 1))


def count(irreps, ir) -> int:
    return sum(m.mul for m in parse(irreps) if m.ir == tuple(ir))


@functools.lru_cache(maxsize=None)
def wigner_3j(l1: int, l2: int, l3: int) -> np.ndarray:
    """(2l1+1, 2l2+1, 2l3+1) real Wigner 3j tensor (Frobenius norm 1), float64, in e3nn-torch's sign
    convention (e3nn-jax's tensor times the sign recorded in ``w3j_signs``)."""
    import e3nn_jax

    from slhmc_jax.models.mace import w3j_signs

    if max(l1, l2, l3) > w3j_signs.L_MAX:
        raise ValueError(f"3j symbols are tabulated up to l = {w3j_signs.L_MAX}; got ({l1}, {l2}, {l3})")
    sign = -1.0 if (l1, l2, l3) in w3j_signs.NEGATIVE else 1.0
    return sign * np.asarray(e3nn_jax.clebsch_gordan(l1, l2, l3), dtype=np.float64)


# ----------------------------------------------------------------------------------------
# generalised coupling coefficients of the symmetric contraction (MACE eq. 10)


def _coupling_basis(coupling: tuple[tuple[int, int], ...], nu: int, filter_mid, final=None):
    """All couplings of ``nu`` copies of the coupling irreps (each of multiplicity 1).

    Returns a list of (ir_out, tensor (2l_out+1, D, ..., D)), D = sum of dims, sorted stably by ir_out;
    built recursively by coupling the (nu-1)-fold products with one more factor through
    sqrt(2l_out+1) * W3j(l_out, l_left, l_right) (component normalisation). With ``final`` only the
    couplings to that irrep are formed at the last level (same order as filtering afterwards).
    """
    D = sum(2 * l + 1 for l, _ in coupling)
    if nu == 1:
        eye = np.eye(D)
        out, start = [], 0
        for ir in coupling:
            d = 2 * ir[0] + 1
            out.append((ir, eye[start:start + d]))
            start += d
        return out
    out = []
    for ir_left, c_left in _coupling_basis(coupling, nu - 1, filter_mid):
        start = 0
        for ir in coupling:
            d = 2 * ir[0] + 1
            for ir_out in product(ir_left, ir):
                if filter_mid is not None and ir_out not in filter_mid:
                    continue
                if final is not None and ir_out != final:
                    continue
                c = wigner_3j(ir_out[0], ir_left[0], ir[0]) * np.sqrt(2 * ir_out[0] + 1)
                c = np.einsum("jk,ijl->ikl", c_left.reshape(c_left.shape[0], -1), c)
                c = c.reshape((2 * ir_out[0] + 1,) + (D,) * (nu - 1) + (d,))
                full = np.zeros((2 * ir_out[0] + 1,) + (D,) * nu)
                full[..., start:start + d] = c
                out.append((ir_out, full))
            start += d
    return sorted(out, key=lambda item: sort_key(item[0]))


@functools.lru_cache(maxsize=None)
def coupling_tensor(coupling: tuple[tuple[int, int], ...], ir_out: tuple[int, int], nu: int) -> np.ndarray:
    """U_nu of mace-torch's ``Contraction``: (2L+1, D, ..., D, K) (the leading axis dropped for L=0).

    K counts the couplings of ``nu`` factors to ``ir_out``; where there are none a single zero
    column is returned (mace-torch then zeroes the weights of that order).
    """
    filter_mid = [(i, 1 if i % 2 == 0 else -1) for i in range(12)] if nu == 4 else None
    D = sum(2 * l + 1 for l, _ in coupling)
    basis = [c for ir, c in _coupling_basis(coupling, nu, filter_mid, final=tuple(ir_out)) if ir == tuple(ir_out)]
    if basis:
        u = np.stack(basis, axis=-1)
    else:
        u = np.zeros((2 * ir_out[0] + 1,) + (D,) * nu + (1,))
    if ir_out[0] == 0:
        u = u[0]
    return u


@functools.lru_cache(maxsize=None)
def symmetric_monomials(coupling: tuple[tuple[int, int], ...], ir_out: tuple[int, int], nu: int):
    """U_nu folded onto sorted index tuples i_1 <= ... <= i_nu (the product of identical features is
    symmetric, so only the symmetrised tensor contributes), keeping non-zero rows.

    Returns:
        indices: (T, nu) int32 feature indices of each monomial x_{i_1} ... x_{i_nu}.
        weights: (T, 2L+1, K) float64 with sum_t x^t weights[t] = sum_i U[m, i_1..i_nu, k] x_{i_1}...x_{i_nu}.
    """
    u = coupling_tensor(coupling, ir_out, nu)
    if ir_out[0] == 0:
        u = u[None]
    D = u.shape[1]
    K = u.shape[-1]
    rows, idx = [], []
    for combo in itertools.combinations_with_replacement(range(D), nu):
        total = np.zeros((u.shape[0], K))
        for perm in set(itertools.permutations(combo)):
            total += u[(slice(None),) + perm]
        if np.any(np.abs(total) > 1e-14):
            rows.append(total)
            idx.append(combo)
    if not rows:  # no coupling at all: one zero monomial keeps shapes static
        return np.zeros((1, nu), np.int32), np.zeros((1, u.shape[0], K))
    return np.asarray(idx, np.int32), np.stack(rows)
