"""The Nequix architecture (NequIP-style, E(3)-equivariant) as one flax module.

Nequix (Koker et al. 2025, atomicarchitects/nequix, MIT) is written in equinox; this is an
independent flax + e3nn-jax implementation of the same function, so that its trained weights
(:mod:`slhmc_jax.models.nequix.nqx`) give the same energies. Per edge (i <- j), with
d_ij = x_j - x_i + S @ cell and r = |d_ij|, x = r / r_c:

    B_n(r)   = (2 / r_c) sin(n pi r / r_c) / r,            n = 1..N           (Bessel basis)
    u(x)     = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2),  0 for x >= 1
    R(r)     = B(r) u(x)                                    (u(1) = u'(1) = u''(1) = 0)
    Y(d)     = spherical harmonics 0e + 1o + ... up to l_max ("component" normalisation)

Layer t (node features h_i, one-hot species at t = 0):

    m_i      = (1/sqrt(avg_n_neighbors)) sum_j MLP_t(R(r_ij)) * [Linear1_t(h)_j (x) Y(d_ij)]
    g_i      = Linear2_t(m_i) + Skip_t(h_i)                 (skip per species if index_weights)
    h_i     <- Gate(RMSNorm_t(g_i))                         (silu on scalars and even gates, tanh on odd)

The tensor product keeps the paths whose output irrep is in the layer's output irreps and
weights each path by one output of the radial MLP (no biases, silu). The last layer outputs
scalars only. Readout: E_i = scale * Linear(h_i) + shift + E0[z_i] (eV), E = sum_i E_i.

RMSNorm (no centring): with chunks c of the irreps (dimension d_c = 2l+1, channels u, components
k) and C chunks, s = sum_c (1 / (C d_c^2)) sum_{u, k} x_{c,u,k}^2 and y_c = w_c x_c / sqrt(s + 1e-12).
(Nequix's normalisation, after eSEN's: the squared norm is summed over channels and averaged over
components, with a weight 1 / (C d_c); it is not divided by the number of channels.)
"""

from __future__ import annotations

from typing import Any

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["Nequix", "bessel_basis", "polynomial_envelope", "rms_norm"]


def bessel_basis(r, n_basis: int, r_max: float):
    """(E, n_basis): B_n(r) = (2 / r_max) sin(n pi r / r_max) / r; the r -> 0 limit at r = 0."""
    n = jnp.arange(1, n_basis + 1, dtype=r.dtype) * jnp.pi
    r = r[:, None]
    safe = jnp.where(r == 0.0, 1.0, r)
    return (2.0 / r_max) * jnp.where(r == 0.0, n / r_max, jnp.sin(n * r / r_max) / safe)


def polynomial_envelope(r, r_max: float, p: float):
    """(E,): u(r / r_max) of the module docstring, exactly 0 at and beyond r_max."""
    x = r / r_max
    u = 1.0 - 0.5 * (p + 1.0) * (p + 2.0) * x**p + p * (p + 2.0) * x ** (p + 1.0) - 0.5 * p * (p + 1.0) * x ** (p + 2.0)
    return jnp.where(x < 1.0, u, 0.0)


def rms_norm(x: e3nn.IrrepsArray, weights, eps: float = 1e-12) -> e3nn.IrrepsArray:
    """Equivariant RMS normalisation over all irreps of a node (module docstring), per node.

    Args:
        x: (n_atoms, irreps.dim) features.
        weights: one (mul,) array per chunk of ``x.irreps``.
    """
    n_chunks = len(x.irreps)
    s = 0.0
    for (_, ir), chunk in zip(x.irreps, x.chunks):
        s = s + jnp.sum(chunk**2, axis=(-2, -1)) / (n_chunks * ir.dim**2)
    scale = (s + eps) ** -0.5
    out = [chunk * w[:, None] * scale[:, None, None] for chunk, w in zip(x.chunks, weights)]
    return e3nn.from_chunks(x.irreps, out, x.shape[:-1])


def message_irreps(input_irreps: e3nn.Irreps, sh_irreps: e3nn.Irreps, output_irreps: e3nn.Irreps) -> e3nn.Irreps:
    """The tensor-product paths kept: input (x) Y filtered to the irreps of the output, sorted and merged."""
    kept = [(mul, ir) for mul, ir_in in input_irreps for _, ir_sh in sh_irreps for ir in ir_in * ir_sh if ir in output_irreps]
    return e3nn.Irreps(kept).regroup()


class NequixLayer(nn.Module):
    """One interaction layer (module docstring). ``output_irreps`` excludes the gate scalars."""

    input_irreps: str
    output_irreps: str
    lmax: int
    n_species: int
    radial_mlp_size: int
    radial_mlp_layers: int
    avg_n_neighbors: float
    index_weights: bool
    layer_norm: bool

    @nn.compact
    def __call__(self, h, species, sh, radial, senders, receivers, edge_mask):
        irreps_in, irreps_out = e3nn.Irreps(self.input_irreps), e3nn.Irreps(self.output_irreps)
        tp_irreps = message_irreps(irreps_in, sh.irreps, irreps_out)
        n_gates = irreps_out.num_irreps - irreps_out.count("0e")
        pre_gate = (irreps_out + e3nn.Irreps(f"{n_gates}x0e")).regroup()

        x = e3nn.flax.Linear(irreps_in, name="linear_1")(h)
        w = radial
        sizes = [self.radial_mlp_size] * self.radial_mlp_layers + [tp_irreps.num_irreps]
        for k, size in enumerate(sizes):
            w = nn.Dense(size, use_bias=False, name=f"radial_{k}", param_dtype=radial.dtype)(w)
            if k < len(sizes) - 1:
                w = jax.nn.silu(w)
        w = w * edge_mask[:, None].astype(w.dtype)
        msg = e3nn.tensor_product(x[receivers], sh, filter_ir_out=tp_irreps)
        if msg.irreps != tp_irreps:
            raise ValueError(f"tensor product gave {msg.irreps}, expected {tp_irreps}")
        msg = msg * w
        agg = e3nn.scatter_sum(msg, dst=senders, output_size=h.shape[0]) / jnp.sqrt(self.avg_n_neighbors)

        out = e3nn.flax.Linear(pre_gate, name="linear_2")(agg)
        if self.index_weights:
            skip = e3nn.flax.Linear(pre_gate, num_indexed_weights=self.n_species, force_irreps_out=True, name="skip")(species, h)
        else:
            skip = e3nn.flax.Linear(pre_gate, force_irreps_out=True, name="skip")(h)
        g = out + skip
        if self.layer_norm:
            weights = [self.param(f"norm_{c}", nn.initializers.ones, (mul,), radial.dtype) for c, (mul, _) in enumerate(g.irreps)]
            g = rms_norm(g, weights)
        return e3nn.gate(g, even_act=jax.nn.silu, odd_act=jax.nn.tanh, even_gate_act=jax.nn.silu)


class Nequix(nn.Module):
    """Nequix energy model with the :class:`~slhmc_jax.models.flax_potential.FlaxPotential` call signature.

    Attributes (the names of Nequix's config, where it has one):
        n_species: size of the species table (one-hot width).
        cutoff: r_c, Angstrom.
        hidden_irreps: node feature irreps, e.g. "128x0e + 64x1o + 32x2e + 32x3o".
        lmax: highest degree of the edge spherical harmonics.
        n_layers: interaction layers (the last one outputs the scalars of ``hidden_irreps``).
        radial_basis_size: Bessel functions N.
        radial_mlp_size, radial_mlp_layers: hidden width and depth of the radial MLP.
        radial_polynomial_p: envelope order p.
        avg_n_neighbors: the message sum is divided by its square root.
        index_weights: per-species skip-connection weights.
        layer_norm: RMS normalisation before each gate.
        scale, shift: eV, applied to the readout (static, not trained, as in Nequix).
        dtype: float dtype of the computation (inputs are cast to it).
    """

    n_species: int
    cutoff: float = 6.0
    hidden_irreps: str = "128x0e + 64x1o + 32x2e + 32x3o"
    lmax: int = 3
    n_layers: int = 4
    radial_basis_size: int = 8
    radial_mlp_size: int = 64
    radial_mlp_layers: int = 2
    radial_polynomial_p: float = 6.0
    avg_n_neighbors: float = 1.0
    index_weights: bool = False
    layer_norm: bool = True
    scale: float = 1.0
    shift: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, species, senders, receivers, edge_vectors, edge_mask):
        d = edge_vectors.astype(self.dtype)
        r = jnp.sqrt(jnp.sum(d * d, axis=-1))
        env = jnp.where(edge_mask, polynomial_envelope(r, self.cutoff, self.radial_polynomial_p), 0.0)
        radial = bessel_basis(r, self.radial_basis_size, self.cutoff) * env[:, None]
        sh = e3nn.spherical_harmonics(e3nn.s2_irreps(self.lmax), d, normalize=True, normalization="component")

        hidden = e3nn.Irreps(self.hidden_irreps)
        h = e3nn.IrrepsArray(f"{self.n_species}x0e", jax.nn.one_hot(species, self.n_species, dtype=self.dtype))
        for t in range(self.n_layers):
            out_irreps = hidden if t < self.n_layers - 1 else hidden.filter("0e")
            h = NequixLayer(
                str(h.irreps), str(out_irreps), self.lmax, self.n_species, self.radial_mlp_size, self.radial_mlp_layers,
                self.avg_n_neighbors, self.index_weights, self.layer_norm, name=f"layer_{t}",
            )(h, species, sh, radial, senders, receivers, edge_mask)
        e = e3nn.flax.Linear("0e", name="readout")(h).array[:, 0]
        e0 = self.param("atom_energies", nn.initializers.zeros, (self.n_species,), self.dtype)
        return e * self.scale + self.shift + e0[species]
