"""The model registry: a name -> ``builder(atomic_numbers, *, key, dtype, **hyper) -> Potential``.

Built in: "mace" (:mod:`slhmc_jax.models.mace`), "nequip" (:mod:`slhmc_jax.models.nequip`), "nequix"
(:mod:`slhmc_jax.models.nequix`, Nequix's architecture; ``nequix.load`` reads its ``.nqx`` files) and
"lennard_jones" (:func:`lennard_jones_energy`). The registry imports a model's module only when that
model is built, and model modules never import the registry (they build on
:mod:`slhmc_jax.models.flax_potential`), so the imports run one way. ``FlaxPotential``,
``SpeciesTable`` and ``from_flax_module`` are re-exported here, where they were first documented.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax.numpy as jnp

from slhmc_jax import neighbours as nl
from slhmc_jax.models.base import FunctionPotential, Potential
from slhmc_jax.models.flax_potential import FlaxPotential, SpeciesTable, from_flax_module

__all__ = ["FlaxPotential", "SpeciesTable", "register", "build", "available", "from_flax_module"]


# ----------------------------------------------------------------------------------------
# registry

_REGISTRY: dict[str, Callable[..., Potential]] = {}


def register(name: str, builder: Callable[..., Potential], *, overwrite: bool = False) -> None:
    """Register ``builder(atomic_numbers, *, key, dtype, **hyper) -> Potential`` under ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string; got {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"model {name!r} is already registered (pass overwrite=True to replace it)")
    if not callable(builder):
        raise ValueError(f"builder for {name!r} is not callable")
    _REGISTRY[name] = builder


def available() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_REGISTRY)


def build(name: str, atomic_numbers, *, key=None, dtype=jnp.float64, **hyper) -> Potential:
    """Build the registered model ``name`` for the elements ``atomic_numbers``.

    Args:
        name: a name from :func:`available`.
        atomic_numbers: the species table, e.g. (8, 22).
        key: PRNG key for parameter initialisation (default PRNGKey(0)).
        dtype: float dtype of the parameters.
        **hyper: model hyperparameters.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered: {available()}")
    return _REGISTRY[name](tuple(int(z) for z in atomic_numbers), key=key, dtype=dtype, **hyper)


# ----------------------------------------------------------------------------------------
# built-in models


def _build_nequip(atomic_numbers, *, key=None, dtype=jnp.float64, **hyper):
    from slhmc_jax.models import nequip

    return nequip.build(atomic_numbers, key=key, dtype=dtype, **hyper)


def _build_mace(atomic_numbers, *, key=None, dtype=jnp.float64, **hyper):
    from slhmc_jax.models import mace

    hp = dict(hyper)
    if "hyperparameters" in hp:
        hps = hp.pop("hyperparameters")
        if hp:
            raise ValueError(f"pass either hyperparameters= or keyword hyperparameters, not both; got {sorted(hp)}")
    else:
        size = hp.pop("size", "small")
        hps = dataclasses.replace(mace.mp0_hyperparameters(size, atomic_numbers=tuple(atomic_numbers)), **hp)
    return mace.build(hps, key=key, dtype=dtype)


def lennard_jones_energy(positions, cell, atomic_numbers, neighbours, *, epsilon_eV, sigma_A, cutoff_A, onset_A):
    """Lennard-Jones pair energy with a C2 switch between onset and cutoff, eV.

    E = 1/2 sum_{i != j} 4 eps [(sigma/r)^12 - (sigma/r)^6] s(r), with s = 1 below onset, 0 above the
    cutoff and the quintic smoothstep in between.
    """
    del atomic_numbers
    d = nl.edge_vectors(positions, cell, neighbours)
    r2 = jnp.sum(d * d, axis=-1)
    inside = neighbours.mask & (r2 < cutoff_A**2)
    r = jnp.sqrt(jnp.where(inside, r2, cutoff_A**2))
    sr6 = (sigma_A / r) ** 6
    t = jnp.clip((r - onset_A) / (cutoff_A - onset_A), 0.0, 1.0)
    switch = 1.0 - t**3 * (10.0 - 15.0 * t + 6.0 * t**2)
    return 0.5 * jnp.sum(jnp.where(inside, 4.0 * epsilon_eV * (sr6 * sr6 - sr6) * switch, 0.0))


def _build_lennard_jones(atomic_numbers, *, key=None, dtype=jnp.float64, epsilon_eV=0.01, sigma_A=2.0, cutoff_A=5.0, onset_A=None):
    del key, dtype
    onset = 0.8 * cutoff_A if onset_A is None else onset_A
    if not 0 < onset < cutoff_A:
        raise ValueError(f"need 0 < onset_A < cutoff_A; got onset_A={onset}, cutoff_A={cutoff_A}")

    def fn(positions, cell, z, neighbours):
        return lennard_jones_energy(positions, cell, z, neighbours, epsilon_eV=epsilon_eV, sigma_A=sigma_A, cutoff_A=cutoff_A, onset_A=onset)

    return FunctionPotential(fn, cutoff=float(cutoff_A), atomic_numbers=tuple(atomic_numbers), uses_neighbours=True)


register("nequip", _build_nequip)


def _build_nequix(atomic_numbers, *, key=None, dtype=jnp.float64, **hyper):
    from slhmc_jax.models import nequix

    return nequix.build(atomic_numbers, key=key, dtype=dtype, **hyper)


register("nequix", _build_nequix)
register("mace", _build_mace)
register("lennard_jones", _build_lennard_jones)
