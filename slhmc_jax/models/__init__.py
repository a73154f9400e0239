"""Interatomic potentials: the Potential protocol and the model registry."""

from slhmc_jax.models.base import FunctionPotential, Potential
from slhmc_jax.models.registry import FlaxPotential, SpeciesTable, available, build, from_flax_module, register

__all__ = ["Potential", "FunctionPotential", "FlaxPotential", "SpeciesTable", "available", "build", "from_flax_module", "register"]
