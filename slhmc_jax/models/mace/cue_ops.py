"""MACE's two equivariant hot spots as cuequivariance segmented polynomials (the GPU path).

The edge tensor product (with the gather of sender features and the scatter-sum onto receivers
fused into one call) and the symmetric contraction (with the per-species weights gathered in
the same call) are written as ``cuequivariance.SegmentedPolynomial``s whose path coefficients
are *this package's own* coupling tensors (:func:`slhmc_jax.models.mace.blocks.conv_messages`
and :func:`~slhmc_jax.models.mace.blocks.symmetric_contraction`), so the weights and the
function are the same as on the portable e3nn-jax path; only the kernel differs.
``cuequivariance_jax.segmented_polynomial`` runs them with NVIDIA's CUDA kernel
(``method="uniform_1d"``: every segment is one channel vector of length ``mul``) on a GPU, and
with its pure-JAX reference (``method="naive"``) elsewhere, which is how the CPU tests check that
the two backends agree.

Layout. cuequivariance segments are channel vectors, so features travel "ir_mul"
(component-major): chunk (n, mul, 2l+1) -> (n, 2l+1, mul) -> (n, (2l+1) mul), one segment per
component. Equations (same as the e3nn-jax blocks):

    conv:        m[i, u, k] = sum_{e: r_e = i} sum_{a, b} C[a, b, k] w[e, u] h[s_e, u, a] Y[e, b],
                 C = sqrt(2 l3 + 1) W3j(l1, l2, l3), one path per nonzero C entry;
    contraction: B[n, u, m] = sum_nu sum_k W_nu[s_n, k, u] sum_t U_nu[t, m, k] prod_q x[n, u, idx_t,q],
                 one path per nonzero U entry (symmetrised monomials t, see ``irreps``).

Install: ``pip install cuequivariance-jax`` (CPU reference); add ``cuequivariance-ops-jax-cu12``
for the CUDA kernels.
"""

from __future__ import annotations

import functools
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax.models.mace import irreps as ir


def available() -> bool:
    """True when ``cuequivariance`` and ``cuequivariance_jax`` import."""
    return importlib.util.find_spec("cuequivariance") is not None and importlib.util.find_spec("cuequivariance_jax") is not None


@functools.lru_cache(maxsize=None)
def cuda_kernels_available() -> bool:
    """True when cuequivariance's CUDA kernels are installed and JAX runs on a GPU."""
    if not available() or jax.default_backend() != "gpu":
        return False
    return importlib.util.find_spec("cuequivariance_ops_jax") is not None


def default_method() -> str:
    """``"uniform_1d"`` (CUDA kernel) where it can run, ``"naive"`` (pure JAX) otherwise."""
    return "uniform_1d" if cuda_kernels_available() else "naive"


def _require():
    if not available():
        raise ImportError("the cuequivariance backend needs `pip install cuequivariance-jax` "
                          "(and cuequivariance-ops-jax-cu12 for the CUDA kernels)")
    import cuequivariance as cue
    import cuequivariance_jax as cuex

    return cue, cuex


def _to_ir_mul(chunks) -> jax.Array:
    """[(n, mul, 2l+1), ...] -> (n, sum (2l+1) mul), component-major."""
    n = chunks[0].shape[0]
    return jnp.concatenate([jnp.swapaxes(c, 1, 2).reshape(n, -1) for c in chunks], axis=1)


def _from_ir_mul(flat, irreps) -> list[jax.Array]:
    """Inverse of :func:`_to_ir_mul` for ``irreps`` (a parsed irreps tuple)."""
    out, start = [], 0
    for m in irreps:
        d = 2 * m.l + 1
        out.append(jnp.swapaxes(flat[:, start:start + d * m.mul].reshape(-1, d, m.mul), 1, 2))
        start += d * m.mul
    return out


def _polynomial(cue, stps_with_buffers, n_inputs):
    """A SegmentedPolynomial over the operands of the first STP (all STPs declare the same segments)."""
    operands = stps_with_buffers[0][1].operands
    first = stps_with_buffers[0][0]
    ins = [None] * n_inputs
    out = None
    for pos, buf in enumerate(first):
        if buf < n_inputs:
            ins[buf] = operands[pos]
        else:
            out = operands[pos]
    return cue.SegmentedPolynomial(ins, [out], [(cue.Operation(list(b)), d) for b, d in stps_with_buffers])


@functools.lru_cache(maxsize=None)
def conv_polynomial(plan):
    """The edge tensor product of a ``blocks.ConvPlan`` as a SegmentedPolynomial.

    Inputs: per-edge weights (E, weight_numel) [segments: one (mul,) per instruction, in the
    order of ``edge_weights``], node features (n, dim) ir_mul, spherical harmonics (E, dim_sh)
    [scalar segments]; output: messages (n, dim_mid) ir_mul.
    """
    cue, _ = _require()
    mul = plan.irreps_node[0].mul
    if any(m.mul != mul for m in plan.irreps_node + plan.irreps_mid):
        raise ValueError("the cuequivariance backend needs equal multiplicities in the node and message irreps")
    d = cue.SegmentedTensorProduct.from_subscripts("u,u,,u")
    for _ in plan.instructions:
        d.add_segment(0, (mul,))
    node_offsets = np.cumsum([0] + [2 * m.l + 1 for m in plan.irreps_node])
    for m in plan.irreps_node:
        for _ in range(2 * m.l + 1):
            d.add_segment(1, (mul,))
    sh_offsets = np.cumsum([0] + [2 * m.l + 1 for m in plan.irreps_sh])
    for m in plan.irreps_sh:
        for _ in range(2 * m.l + 1):
            d.add_segment(2, ())
    mid_offsets = np.cumsum([0] + [2 * m.l + 1 for m in plan.irreps_mid])
    for m in plan.irreps_mid:
        for _ in range(2 * m.l + 1):
            d.add_segment(3, (mul,))
    for t, (i, j, k) in enumerate(plan.instructions):
        a, b, c = plan.irreps_node[i], plan.irreps_sh[j], plan.irreps_mid[k]
        cg = ir.wigner_3j(a.l, b.l, c.l) * np.sqrt(2 * c.l + 1)
        for ia, ib, ik in zip(*np.nonzero(np.abs(cg) > 1e-14)):
            d.add_path(t, int(node_offsets[i] + ia), int(sh_offsets[j] + ib), int(mid_offsets[k] + ik), c=np.asarray(cg[ia, ib, ik]))
    return _polynomial(cue, [((0, 1, 2, 3), d)], 3)


def conv_messages(plan, node_chunks, sh_chunks, edge_weights, senders, receivers, n_nodes: int, method: str | None = None):
    """Same result as ``blocks.conv_messages``: messages summed on receivers, one fused call.

    Edges with zero weights contribute nothing, so padded edges (indices clamped into range)
    are harmless.
    """
    _, cuex = _require()
    poly = conv_polynomial(plan)
    dtype = node_chunks[0].dtype
    x = _to_ir_mul(node_chunks)
    y = jnp.concatenate(sh_chunks, axis=1).astype(dtype)
    snd = jnp.clip(senders, 0, n_nodes - 1).astype(jnp.int32)
    rcv = jnp.clip(receivers, 0, n_nodes - 1).astype(jnp.int32)
    out_size = ir.dim(plan.irreps_mid)
    [out] = cuex.segmented_polynomial(
        poly, [edge_weights.astype(dtype), x, y], [jax.ShapeDtypeStruct((n_nodes, out_size), dtype)],
        indices=[None, snd, None, rcv], method=method or default_method(), name="mace_conv_tp",
    )
    return _from_ir_mul(out, plan.irreps_mid)


@functools.lru_cache(maxsize=None)
def contraction_polynomial(coupling, irreps_out, correlations, channels: int):
    """The symmetric contraction as a SegmentedPolynomial (one tensor product per degree nu).

    Inputs: weights (n_species, sum K) per channel [segments (channels,) ordered output entry,
    then nu, then k: the flattened ``W_nu`` arrays], features (n, D channels) ir_mul; output
    (n, dim_out) ir_mul. ``irreps_out`` is a parsed irreps tuple, ``correlations`` one order
    per output entry.
    """
    cue, _ = _require()
    blocks_uk = []  # (o, nu, idx, u, weight segment offset)
    n_w = 0
    for o, (m_out, corr) in enumerate(zip(irreps_out, correlations)):
        for nu in range(1, corr + 1):
            idx, u = ir.symmetric_monomials(coupling, m_out.ir, nu)
            blocks_uk.append((o, nu, idx, u, n_w))
            n_w += u.shape[-1]
    dims_in = [2 * l + 1 for l, _ in coupling]
    d_in = sum(dims_in)
    out_offsets = np.cumsum([0] + [2 * m.l + 1 for m in irreps_out])
    stps = []
    for nu in sorted({b[1] for b in blocks_uk}):
        d = cue.SegmentedTensorProduct.from_subscripts(",".join(["u"] * (nu + 2)))
        for _ in range(n_w):
            d.add_segment(0, (channels,))
        for q in range(nu):
            for _ in range(d_in):
                d.add_segment(1 + q, (channels,))
        for _ in range(int(out_offsets[-1])):
            d.add_segment(nu + 1, (channels,))
        for o, nu_b, idx, u, w0 in blocks_uk:
            if nu_b != nu:
                continue
            for t, m, k in zip(*np.nonzero(np.abs(u) > 1e-14)):
                d.add_path(int(w0 + k), *[int(v) for v in idx[t]], int(out_offsets[o] + m), c=np.asarray(u[t, m, k]))
        stps.append(((0,) + (1,) * nu + (2,), d))
    return _polynomial(cue, stps, 2)


def symmetric_contraction(coupling, irreps_out, correlations, weights, x, species, method: str | None = None):
    """Same arguments and result as ``blocks.symmetric_contraction`` (weights gathered by species in-kernel)."""
    _, cuex = _require()
    irreps_out = ir.parse(irreps_out)
    n, channels, _ = x.shape
    poly = contraction_polynomial(tuple(coupling), irreps_out, tuple(int(c) for c in correlations), int(channels))
    w = jnp.concatenate([wn.astype(x.dtype).reshape(wn.shape[0], -1) for w_list in weights for wn in w_list], axis=1)
    xs = jnp.swapaxes(x, 1, 2).reshape(n, -1)
    [out] = cuex.segmented_polynomial(
        poly, [w, xs], [jax.ShapeDtypeStruct((n, ir.dim(irreps_out)), x.dtype)],
        indices=[species.astype(jnp.int32), None, None], method=method or default_method(), name="mace_symmetric_contraction",
    )
    return _from_ir_mul(out, irreps_out)
