"""Nequix (atomicarchitects/nequix, MIT): a NequIP-style universal potential, implemented here in flax.

- :func:`load`: a Nequix ``.nqx`` file (for example ``nequix-mp-1.nqx``, 89 elements, trained on
  MPtrj; fetch it from Nequix's repository) as a :class:`~slhmc_jax.models.FlaxPotential`;
- :func:`build`: the same architecture with random weights for any species table (the
  registry's builder signature);
- :func:`cast`: the same potential in another float dtype;
- :class:`Nequix`: the flax module (equations in :mod:`slhmc_jax.models.nequix.model`).

The ``nequix`` package is not needed: the file is read with NumPy (no pickle).
"""

from __future__ import annotations

import jax.numpy as jnp

from slhmc_jax.models.flax_potential import FlaxPotential, from_flax_module, with_species_energies
from slhmc_jax.models.nequix.model import Nequix
from slhmc_jax.models.nequix.nqx import load, read_nqx

__all__ = ["Nequix", "build", "cast", "load", "read_nqx"]


def build(atomic_numbers, *, key=None, dtype=jnp.float64, cutoff: float = 6.0, atom_energies_eV=None, **hyper) -> FlaxPotential:
    """A Nequix :class:`FlaxPotential` with random weights.

    Args:
        atomic_numbers: species table (the one-hot width is its length).
        key: PRNG key (default PRNGKey(0)).
        dtype: parameter and computation dtype.
        cutoff: Angstrom.
        atom_energies_eV: per-species energies E0, one per element (default zeros).
        **hyper: other :class:`Nequix` attributes (hidden_irreps, n_layers, avg_n_neighbors, ...).
    """
    z = tuple(int(v) for v in atomic_numbers)
    module = Nequix(n_species=len(z), cutoff=float(cutoff), dtype=dtype, **hyper)
    pot = from_flax_module(module, z, cutoff, key=key, dtype=dtype)
    if atom_energies_eV is not None:
        pot = with_species_energies(pot, "atom_energies", atom_energies_eV, "atom_energies_eV")
    return pot


def cast(potential: FlaxPotential, dtype) -> FlaxPotential:
    """``potential`` (a Nequix :class:`FlaxPotential`) with parameters and computation in ``dtype``."""
    if not isinstance(getattr(potential, "module", None), Nequix):
        raise ValueError(f"cast needs a Nequix FlaxPotential; got {type(potential).__name__}")
    module = potential.module.clone(dtype=dtype)
    return from_flax_module(module, potential.atomic_numbers, potential.cutoff, dtype=dtype, params=potential.params)
