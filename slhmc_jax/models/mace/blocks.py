"""MACE building blocks as pure functions over plain arrays, in e3nn's normalisation conventions.

Features are lists of chunks, one per entry of an irreps list: chunk k has shape
(n, mul_k, 2 l_k + 1) (e3nn's "mul_ir" layout). Static structure (irreps, instructions, coupling
tensors) is plain Python/NumPy and is baked into the trace; weights are arrays in a pytree.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax.models.mace import irreps as ir

# e3nn 0.4's normalize2mom(silu): 1 / sqrt(<silu(z)^2>) estimated by e3nn with 10^6 normal samples
# (torch generator, seed 0). mace-torch recomputes this number when it builds a model, so it is
# kept bit-for-bit rather than replaced by the exact integral (1.6790...).
SILU_NORMALIZATION = 1.6791767923989418


def normalized_silu(x, constant: float = SILU_NORMALIZATION):
    """silu(x) * constant (second moment 1 under a unit normal input)."""
    return jax.nn.silu(x) * constant


# ----------------------------------------------------------------------------------------
# equivariant linear maps


class LinearPlan(NamedTuple):
    """e3nn ``o3.Linear``: every input irrep feeds every output entry of the same irrep.

    instructions: ((i_in, i_out), ...), in e3nn's weight order.
    alphas: 1 / sqrt(sum of mul_in over the instructions into i_out) per instruction.
    """

    irreps_in: tuple
    irreps_out: tuple
    instructions: tuple
    alphas: tuple

    @property
    def weight_shapes(self) -> list[tuple[int, int]]:
        return [(self.irreps_in[i].mul, self.irreps_out[o].mul) for i, o in self.instructions]


@functools.lru_cache(maxsize=None)
def linear_plan(irreps_in, irreps_out) -> LinearPlan:
    irreps_in, irreps_out = ir.parse(irreps_in), ir.parse(irreps_out)
    instructions = tuple(
        (i, o) for i, a in enumerate(irreps_in) for o, b in enumerate(irreps_out) if a.ir == b.ir
    )
    fan_in = {o: sum(irreps_in[i].mul for i, oo in instructions if oo == o) for _, o in instructions}
    alphas = tuple(float(1.0 / np.sqrt(fan_in[o])) if fan_in[o] > 0 else 1.0 for _, o in instructions)
    return LinearPlan(irreps_in, irreps_out, instructions, alphas)


def linear(plan: LinearPlan, weights: Sequence[jax.Array], chunks: Sequence[jax.Array]) -> list[jax.Array]:
    """out_o[n, w, m] = sum_{(i, o)} alpha * sum_u W[u, w] x_i[n, u, m]; entries with no input are zero."""
    n = chunks[0].shape[0]
    dtype = chunks[0].dtype
    out: list = [None] * len(plan.irreps_out)
    for (i, o), alpha, w in zip(plan.instructions, plan.alphas, weights):
        y = jnp.einsum("num,uw->nwm", chunks[i], w.astype(dtype)) * alpha
        out[o] = y if out[o] is None else out[o] + y
    for o, m in enumerate(plan.irreps_out):
        if out[o] is None:
            out[o] = jnp.zeros((n, m.mul, 2 * m.l + 1), dtype)
    return out


def species_linear(irreps_in, irreps_out, weights: Sequence[jax.Array], chunks, species, n_species: int):
    """e3nn ``FullyConnectedTensorProduct(irreps_in, n_species x 0e, irreps_out)`` with a one-hot
    second input (mace-torch's element-dependent "skip" map):

        out_o[n, w, m] = sum_{i: ir_i = ir_o} sum_u W_i[u, s_n, w] x_i[n, u, m] / sqrt(sum_i mul_i * n_species)

    Weights: one (mul_in, n_species, mul_out) array per (i, o) pair with equal irreps, in e3nn order.
    """
    irreps_in, irreps_out = ir.parse(irreps_in), ir.parse(irreps_out)
    pairs = [(i, o) for i, a in enumerate(irreps_in) for o, b in enumerate(irreps_out) if a.ir == b.ir]
    fan_in = {o: sum(irreps_in[i].mul * n_species for i, oo in pairs if oo == o) for _, o in pairs}
    n = chunks[0].shape[0]
    dtype = chunks[0].dtype
    out: list = [None] * len(irreps_out)
    for (i, o), w in zip(pairs, weights):
        w_node = jnp.take(w.astype(dtype), species, axis=1)  # (mul_in, n, mul_out)
        y = jnp.einsum("num,unw->nwm", chunks[i], w_node) / float(np.sqrt(fan_in[o]))
        out[o] = y if out[o] is None else out[o] + y
    for o, m in enumerate(irreps_out):
        if out[o] is None:
            out[o] = jnp.zeros((n, m.mul, 2 * m.l + 1), dtype)
    return out


def species_linear_shapes(irreps_in, irreps_out, n_species: int) -> list[tuple[int, int, int]]:
    irreps_in, irreps_out = ir.parse(irreps_in), ir.parse(irreps_out)
    return [
        (a.mul, n_species, b.mul) for a in irreps_in for b in irreps_out if a.ir == b.ir
    ]


# ----------------------------------------------------------------------------------------
# radial part


def bessel_basis(r, r_max: float, num_basis: int):
    """(E, num_basis): sqrt(2 / r_max) sin(n pi r / r_max) / r, n = 1..num_basis (r in A)."""
    n = jnp.arange(1, num_basis + 1, dtype=r.dtype)
    return float(np.sqrt(2.0 / r_max)) * jnp.sin(n * float(np.pi / r_max) * r[:, None]) / r[:, None]


def polynomial_cutoff(r, r_max: float, p: int):
    """(E,) envelope 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2), x = r / r_max, zero for r >= r_max."""
    x = r / r_max
    p = float(p)
    env = 1.0 - (p + 1.0) * (p + 2.0) / 2.0 * x**p + p * (p + 2.0) * x ** (p + 1) - p * (p + 1.0) / 2.0 * x ** (p + 2)
    return jnp.where(x < 1.0, env, 0.0)


def radial_mlp(weights: Sequence[jax.Array], x, constant: float = SILU_NORMALIZATION):
    """e3nn ``FullyConnectedNet``: h <- silu_n(h W / sqrt(fan_in)) for hidden layers, last layer linear."""
    for k, w in enumerate(weights):
        x = x @ (w.astype(x.dtype) / float(np.sqrt(w.shape[0])))
        if k < len(weights) - 1:
            x = normalized_silu(x, constant)
    return x


# ----------------------------------------------------------------------------------------
# interaction: edge tensor product


class ConvPlan(NamedTuple):
    """mace-torch's ``tp_out_irreps_with_instructions`` + e3nn ``TensorProduct`` ('uvu', weights per edge).

    instructions: ((i_node, i_sh, k_mid), ...) sorted by k_mid; irreps_mid: the sorted message irreps.
    """

    irreps_node: tuple
    irreps_sh: tuple
    irreps_mid: tuple
    instructions: tuple

    @property
    def weight_numel(self) -> int:
        return sum(self.irreps_node[i].mul for i, _, _ in self.instructions)


@functools.lru_cache(maxsize=None)
def conv_plan(irreps_node, irreps_sh, irreps_target) -> ConvPlan:
    irreps_node, irreps_sh, irreps_target = ir.parse(irreps_node), ir.parse(irreps_sh), ir.parse(irreps_target)
    targets = {m.ir for m in irreps_target}
    mid, instructions = [], []
    for i, a in enumerate(irreps_node):
        for j, b in enumerate(irreps_sh):
            for out in ir.product(a.ir, b.ir):
                if out in targets:
                    instructions.append((i, j, len(mid)))
                    mid.append(ir.MulIrrep(a.mul, *out))
    mid_sorted, perm = ir.sort(mid)
    instructions = sorted(((i, j, perm[k]) for i, j, k in instructions), key=lambda t: t[2])
    return ConvPlan(irreps_node, irreps_sh, tuple(mid_sorted), tuple(instructions))


def conv_messages(plan: ConvPlan, node_chunks, sh_chunks, edge_weights, senders, receivers, n_nodes: int):
    """Messages m_i = sum_{j -> i} TP(h_j, Y(r_ij); R(|r_ij|)) summed on receivers.

    Per instruction (l1, l2 -> l3), with e3nn component normalisation (one path per output entry):
        m[e, u, k] = sqrt(2 l3 + 1) w[e, u] sum_{a, b} W3j[a, b, k] h[s_e, u, a] Y[e, b]

    Args:
        node_chunks: per node-irreps entry (n, mul, 2l+1).
        sh_chunks: per spherical-harmonic degree (E, 2l+1).
        edge_weights: (E, weight_numel) radial weights (already multiplied by the cutoff envelope).
        senders, receivers: (E,) int.
    Returns:
        chunks of the aggregated messages, one per irreps_mid entry, (n, mul, 2l+1).
    """
    dtype = node_chunks[0].dtype
    gathered = [jnp.take(c, senders, axis=0) for c in node_chunks]
    out = []
    offset = 0
    for i, j, k in plan.instructions:
        a, b, c = plan.irreps_node[i], plan.irreps_sh[j], plan.irreps_mid[k]
        w = edge_weights[:, offset:offset + a.mul]
        offset += a.mul
        cg = jnp.asarray(ir.wigner_3j(a.l, b.l, c.l) * np.sqrt(2 * c.l + 1), dtype)
        if a.l == 0:
            # scalar node features: the 3j tensor is a (signed, scaled) identity on the SH index
            msg = (gathered[i] * w[:, :, None]) * (sh_chunks[j] @ cg[0])[:, None, :]
        else:
            msg = jnp.einsum("eua,eb,abk->euk", gathered[i], sh_chunks[j], cg) * w[:, :, None]
        out.append(jax.ops.segment_sum(msg, receivers, num_segments=n_nodes))
    return out


# ----------------------------------------------------------------------------------------
# symmetric contraction (MACE eq. 10-11)


def symmetric_contraction(coupling, irreps_out, correlations, weights, x, species):
    """Channel-wise product basis B and its element-dependent contraction:

        out[n, c, m] = sum_{nu=1..corr} sum_k W_nu[s_n, k, c] sum_{i_1..i_nu} U_nu[m, i_1..i_nu, k] x[n, c, i_1] ... x[n, c, i_nu]

    U_nu is evaluated on symmetrised monomials (``irreps.symmetric_monomials``), which is exact
    because the product of identical features is symmetric under permutations of the i's.

    Args:
        coupling: tuple of (l, p), the irreps of the feature axis of ``x`` (each once).
        irreps_out: the output irreps (mul = channels each).
        correlations: correlation order per output entry.
        weights: per output entry a list [W_1, ..., W_corr], W_nu (n_species, K_nu, channels).
        x: (n, channels, D) features.
        species: (n,) int species index.
    Returns:
        chunks (n, channels, 2l+1) per output entry.
    """
    out = []
    for o, w_list in zip(ir.parse(irreps_out), weights):
        acc = None
        for nu, w in enumerate(w_list, start=1):
            idx, u = ir.symmetric_monomials(coupling, o.ir, nu)
            mono = x[:, :, idx[:, 0]]
            for q in range(1, nu):
                mono = mono * x[:, :, idx[:, q]]  # (n, c, T)
            basis = jnp.einsum("nct,tmk->ncmk", mono, jnp.asarray(u, x.dtype))
            w_node = jnp.take(w.astype(x.dtype), species, axis=0)  # (n, K, c)
            term = jnp.einsum("ncmk,nkc->ncm", basis, w_node)
            acc = term if acc is None else acc + term
        out.append(acc)
    return out


# ----------------------------------------------------------------------------------------
# receiver-major ("dense") edge layout: messages summed by batched matrix products


def conv_messages_dense(plan: ConvPlan, node_chunks, sh_chunks, edge_weights, slot_senders):
    """Same result as :func:`conv_messages` with edges in receiver-major slots (the dense
    per-atom neighbour format of :mod:`slhmc_jax.neighbours`).

    The sum over a receiver's edges is a batched matrix product, so the per-edge message tensor
    (E, mul, 2l+1) is never written to memory:

        m[n, u, k] = sqrt(2 l3 + 1) sum_{a, b} W3j[a, b, k] sum_K w[n, K, u] h[s_nK, u, a] Y[n, K, b]

    Args:
        sh_chunks: per degree (n, K, 2l+1), zero in empty slots.
        edge_weights: (n, K, weight_numel), zero in empty slots.
        slot_senders: (n, K) int32 sender of each slot (any valid atom index in empty slots).
    """
    dtype = node_chunks[0].dtype
    gathered = [jnp.take(c, slot_senders, axis=0) for c in node_chunks]  # (n, K, mul, d)
    out = []
    offset = 0
    for i, j, k in plan.instructions:
        a, b, c = plan.irreps_node[i], plan.irreps_sh[j], plan.irreps_mid[k]
        w = edge_weights[:, :, offset:offset + a.mul]
        offset += a.mul
        cg = jnp.asarray(ir.wigner_3j(a.l, b.l, c.l) * np.sqrt(2 * c.l + 1), dtype)
        if a.l == 0:
            t = jnp.einsum("nku,nkb->nub", gathered[i][..., 0] * w, sh_chunks[j])
            out.append(jnp.einsum("nub,bk->nuk", t, cg[0]))
        else:
            t = jnp.einsum("nkua,nkb->nuab", gathered[i] * w[..., None], sh_chunks[j])
            out.append(jnp.einsum("nuab,abk->nuk", t, cg))
    return out
