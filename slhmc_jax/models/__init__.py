"""Interatomic potentials: the Potential protocol and the model registry."""

from slhmc_jax.models.base import FunctionPotential, Potential

__all__ = ["Potential", "FunctionPotential"]
