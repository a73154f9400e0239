"""A small NequIP-style E(3)-equivariant message-passing potential in flax + e3nn-jax.

It is written as ONE flax module with the :class:`~slhmc_jax.models.registry.FlaxPotential`
signature, which is the path a user follows to plug in their own model.

Per layer t (h_i^t: node features, irreps ``hidden_irreps``):

    R_k(r)   = B_k(r) u(r/r_c)        Bessel basis B_k(r) = sqrt(2/r_c) sin(k pi r/r_c)/r times a
                                      polynomial envelope u with u(1) = u'(1) = u''(1) = 0
    m_ij     = MLP(R(r_ij)) (x) [h_j^t (x) Y(r_ij_hat)]       (per-path weights, tensor product)
    M_i      = (1/avg_num_neighbors) sum_j m_ij
    h_i^t+1  = h_i^t + Gate(Linear(M_i) + SelfInteraction_{z_i}(h_i^t))

Readout: E_i = scale * Linear(h_i^T)_0e + shift_{z_i}, E = sum_i E_i (eV). All radial functions
and their first two derivatives vanish at the cutoff, so energy and forces are smooth there.
"""

from __future__ import annotations

from typing import Sequence

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp

from slhmc_jax.models.flax_potential import FlaxPotential, from_flax_module, with_species_energies

__all__ = ["NequIP", "build"]


class NequIP(nn.Module):
    """NequIP-style energy model (signature: see :mod:`slhmc_jax.models.registry`).

    Attributes:
        n_species: size of the species table.
        cutoff: r_c, Angstrom.
        hidden_irreps: node feature irreps, e.g. "16x0e+8x1o+4x2e".
        l_max: highest degree of the edge spherical harmonics.
        n_layers: message-passing layers.
        n_basis: radial Bessel functions.
        radial_hidden: hidden widths of the radial MLP.
        envelope_p: order p of the polynomial envelope ``e3nn.poly_envelope(p - 1, 2)`` (DimeNet's
            u_p): u(0) = 1 with p - 1 vanishing derivatives, u(1) = u'(1) = u''(1) = 0.
        avg_num_neighbors: normalisation of the message sum.
        energy_scale: eV, multiplies the readout.
    """

    n_species: int
    cutoff: float
    hidden_irreps: str = "16x0e+8x1o+4x2e"
    l_max: int = 2
    n_layers: int = 2
    n_basis: int = 8
    radial_hidden: Sequence[int] = (16, 16)
    envelope_p: int = 6
    avg_num_neighbors: float = 10.0
    energy_scale: float = 1.0

    @nn.compact
    def __call__(self, species, senders, receivers, edge_vectors, edge_mask):
        n_atoms = species.shape[0]
        dtype = edge_vectors.dtype
        hidden = e3nn.Irreps(self.hidden_irreps)

        r = jnp.sqrt(jnp.sum(edge_vectors**2, axis=-1))
        r_safe = jnp.where(edge_mask, r, 0.5 * self.cutoff)
        envelope = e3nn.poly_envelope(self.envelope_p - 1, 2)(r_safe / self.cutoff)
        envelope = jnp.where(edge_mask, envelope, 0.0)
        radial = e3nn.bessel(r_safe, self.n_basis, self.cutoff) * envelope[:, None]  # (E, n_basis)

        vec = e3nn.IrrepsArray("1o", jnp.where(edge_mask[:, None], edge_vectors, jnp.array([1.0, 0.0, 0.0], dtype)))
        sh = e3nn.spherical_harmonics(list(range(1, self.l_max + 1)), vec, normalize=True, normalization="component")
        sh = e3nn.concatenate([e3nn.IrrepsArray("0e", jnp.ones((sh.shape[0], 1), dtype)), sh])

        one_hot = jax.nn.one_hot(species, self.n_species, dtype=dtype)
        h = e3nn.flax.Linear(f"{hidden.count('0e')}x0e", name="embedding")(e3nn.IrrepsArray(f"{self.n_species}x0e", one_hot))

        for layer in range(self.n_layers):
            msg = e3nn.tensor_product(h[receivers], sh, filter_ir_out=hidden)
            weights = e3nn.flax.MultiLayerPerceptron(
                (*self.radial_hidden, msg.irreps.num_irreps), act=jax.nn.silu, output_activation=False, name=f"radial_{layer}"
            )(radial)
            msg = e3nn.elementwise_tensor_product(msg, e3nn.IrrepsArray(f"{msg.irreps.num_irreps}x0e", weights))
            msg = msg * edge_mask[:, None].astype(dtype)
            agg = e3nn.scatter_sum(msg, dst=senders, output_size=n_atoms) / self.avg_num_neighbors

            gated = [(mul, ir) for mul, ir in hidden if ir.l > 0]
            n_gates = sum(mul for mul, _ in gated)
            pre_irreps = e3nn.Irreps(f"{hidden.count('0e')}x0e+{n_gates}x0e") + e3nn.Irreps(gated)
            update = e3nn.flax.Linear(pre_irreps, force_irreps_out=True, name=f"message_linear_{layer}")(agg)
            self_int = e3nn.flax.Linear(pre_irreps, num_indexed_weights=self.n_species, force_irreps_out=True, name=f"self_{layer}")(
                species, h
            )
            new = e3nn.gate(update + self_int)
            h = new if h.irreps == new.irreps else new + e3nn.flax.Linear(new.irreps, force_irreps_out=True, name=f"skip_{layer}")(h)

        out = e3nn.flax.Linear("1x0e", name="readout")(h).array[:, 0]
        shift = self.param("species_shift", nn.initializers.zeros, (self.n_species,), dtype)
        return self.energy_scale * out + shift[species]


def build(
    atomic_numbers,
    *,
    key=None,
    dtype=jnp.float64,
    cutoff: float = 4.0,
    species_energies_eV: Sequence[float] | None = None,
    **hyper,
) -> FlaxPotential:
    """A NequIP-style :class:`FlaxPotential` with random parameters.

    Args:
        atomic_numbers: species table.
        key: PRNG key (default PRNGKey(0)).
        dtype: parameter dtype.
        cutoff: Angstrom.
        species_energies_eV: initial per-species energy shifts (default zeros).
        **hyper: other :class:`NequIP` attributes.
    """
    z = tuple(atomic_numbers)
    module = NequIP(n_species=len(z), cutoff=float(cutoff), **hyper)
    pot = from_flax_module(module, z, cutoff, key=key, dtype=dtype)
    if species_energies_eV is not None:
        pot = with_species_energies(pot, "species_shift", species_energies_eV, "species_energies_eV")
    return pot
