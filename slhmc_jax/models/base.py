"""The Potential protocol every model follows, and a wrapper for plain JAX energy functions.

A potential is data plus a pure function:

    energy(params, positions, cell, atomic_numbers, neighbours) -> energy (eV, scalar)

- ``params``: a pytree (flax parameters, or ``None``).
- ``positions``: (n_atoms, 3) float, Angstrom.
- ``cell``: (3, 3) float, Angstrom, rows are lattice vectors (ASE convention).
- ``atomic_numbers``: (n_atoms,) int.
- ``neighbours``: a :class:`slhmc_jax.neighbours.Neighbours` built with a cutoff of at least
  ``potential.cutoff`` (it may contain pairs up to cutoff + skin, which the model must
  ignore), or ``None`` when ``potential.cutoff is None`` (the function sees all atoms).
  A model that reads the dense per-atom format faster says so with a true
  ``prefers_dense_neighbours`` attribute (optional; absent means the pair format).

The energy must be jit- and vmap-able; forces and stress come from autodiff
(:mod:`slhmc_jax.calculator`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol, runtime_checkable

import jax.numpy as jnp

PyTree = Any


@runtime_checkable
class Potential(Protocol):
    """What the sampler, calculator and trainer need from a model.

    Attributes:
        params: parameter pytree (what fine-tuning updates).
        cutoff: interaction cutoff in Angstrom, or None for a function of all positions.
        atomic_numbers: the species table (supported atomic numbers), or None for any.
    """

    params: PyTree
    cutoff: float | None
    atomic_numbers: tuple[int, ...] | None

    def energy(self, params: PyTree, positions, cell, atomic_numbers, neighbours) -> jnp.ndarray:
        """Total energy in eV (scalar) of one configuration."""
        ...


@dataclasses.dataclass(frozen=True)
class FunctionPotential:
    """A plain JAX function ``energy_fn(positions, cell, atomic_numbers) -> eV`` as a Potential.

    Used for closed-form test targets and toy proposals (harmonic crystals, Morse dimers).
    With ``cutoff=None`` no neighbour list is built and the function sees all atoms; with a
    cutoff, ``energy_fn`` may take a fourth argument ``neighbours`` (set
    ``uses_neighbours=True``).

    Args:
        energy_fn: pure JAX function returning the energy in eV.
        cutoff: Angstrom, or None.
        atomic_numbers: species table, or None for any element.
        uses_neighbours: pass the neighbour list as a fourth argument.
    """

    energy_fn: Callable[..., jnp.ndarray]
    cutoff: float | None = None
    atomic_numbers: tuple[int, ...] | None = None
    uses_neighbours: bool = False
    params: PyTree = None

    def energy(self, params, positions, cell, atomic_numbers, neighbours=None):
        del params
        if self.uses_neighbours:
            return self.energy_fn(positions, cell, atomic_numbers, neighbours)
        return self.energy_fn(positions, cell, atomic_numbers)
