"""The Target protocol: the judge of an SLHMC chain (any energy model the user trusts).

A target takes a batch of configurations (``ase.Atoms``) and returns their energies in eV.
``evaluate`` returns the full results (energy, forces, stress where the method has them).
Impure and slow by nature (DFT); it lives at the edge of the package.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np


@dataclasses.dataclass(frozen=True)
class TargetResult:
    """One labelled configuration.

    Attributes:
        energy_eV: total energy, eV.
        forces_eV_A: (n_atoms, 3) eV/A, or None where the method has no gradients.
        stress_eV_A3: (6,) Voigt (xx, yy, zz, yz, xz, xy), ASE sign convention, eV/A^3, or None.
        info: method details worth keeping (SCF cycles, wall time, settings hash, ...).
    """

    energy_eV: float
    forces_eV_A: np.ndarray | None = None
    stress_eV_A3: np.ndarray | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


class TargetEvaluationError(RuntimeError):
    """A target could not produce a trustworthy energy (SCF not converged, NaN, crash).

    Attributes:
        index: position of the failed configuration in the batch (or None).
        settings: the method settings that failed, for the error report.
    """

    def __init__(self, message: str, index: int | None = None, settings: dict | None = None):
        super().__init__(message)
        self.index = index
        self.settings = settings or {}


@runtime_checkable
class Target(Protocol):
    """Callable on a list of ase.Atoms -> energies (n,) float64 in eV."""

    def __call__(self, atoms_list: Sequence[Any]) -> np.ndarray: ...

    def evaluate(self, atoms_list: Sequence[Any]) -> list[TargetResult]: ...
