"""MACE (ScaleShiftMACE, the MACE-MP-0 family) in JAX, with mace-torch import and export.

    hps = mp0_hyperparameters("small", atomic_numbers=(8, 22))
    potential = build(hps, key=jax.random.PRNGKey(0), dtype=jnp.float32)
    potential = load("mace-mp-0-small.model")     # a mace-torch checkpoint, or a file from save()
    save_torch(potential, "finetuned.model")      # back to mace-torch / ASE / LAMMPS tools
"""

from __future__ import annotations

import os

from slhmc_jax.models.mace.model import (
    MP0_ATOMIC_NUMBERS,
    MACEHyperparameters,
    MACEPotential,
    build,
    mp0_hyperparameters,
    node_energies,
)
from slhmc_jax.models.mace.native_io import save
from slhmc_jax.models.mace.torch_io import from_torch, load_torch, save_torch, to_torch

__all__ = [
    "MP0_ATOMIC_NUMBERS",
    "MACEHyperparameters",
    "MACEPotential",
    "build",
    "from_torch",
    "load",
    "mp0_hyperparameters",
    "node_energies",
    "save",
    "save_torch",
    "to_torch",
]


def load(path, dtype=None) -> MACEPotential:
    """A MACE potential from a mace-torch checkpoint (``.model``, needs torch) or a file from :func:`save`.

    Args:
        path: file path.
        dtype: parameter dtype (default: as stored).
    """
    from slhmc_jax.models.mace import native_io

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no MACE model file at {path}")
    if native_io.is_native(path):
        potential = native_io.load_native(path)
        return potential if dtype is None else potential.astype(dtype)
    return load_torch(path, dtype=dtype)
