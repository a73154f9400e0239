"""Interatomic potentials: the Potential protocol and the model registry."""

from slhmc_jax.models.base import FunctionPotential, Potential
from slhmc_jax.models.flax_potential import FlaxPotential, SpeciesTable, from_flax_module
from slhmc_jax.models.registry import available, build, register

__all__ = ["Potential", "FunctionPotential", "FlaxPotential", "SpeciesTable", "available", "build", "from_flax_module",
           "register", "load"]


def load(path, dtype=None) -> Potential:
    """A model from a file: a Nequix model (``.nqx``, float32 unless ``dtype`` says otherwise), a
    mace-torch checkpoint (``.model``, needs torch) or the project's own saved MACE
    (``slhmc_jax.models.mace.save``)."""
    from slhmc_jax.models import mace

    if str(path).endswith(".nqx"):
        import jax.numpy as jnp

        from slhmc_jax.models import nequix

        return nequix.load(path, dtype=jnp.float32 if dtype is None else dtype)

    return mace.load(path, dtype=dtype)
