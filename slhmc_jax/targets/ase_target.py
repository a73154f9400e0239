"""Any ASE calculator (EMT, VASP, CP2K, GPAW, ...) as an SLHMC target."""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from slhmc_jax.targets.base import TargetEvaluationError, TargetResult


class ASETarget:
    """Energies (eV), forces (eV/A) and stress (eV/A^3, when periodic and supported) from an ASE calculator.

    Args:
        calculator: an ase calculator instance (it is attached to a copy of each configuration).
        compute_forces: also request forces.
        compute_stress: also request stress (periodic cells only).
    """

    def __init__(self, calculator, compute_forces: bool = True, compute_stress: bool = False):
        self.calculator = calculator
        self.compute_forces = compute_forces
        self.compute_stress = compute_stress

    def settings(self) -> dict:
        calc = self.calculator
        return {"method": "ase", "calculator": type(calc).__name__,
                "parameters": {k: repr(v) for k, v in sorted(getattr(calc, "parameters", {}).items())}}

    def evaluate_one(self, atoms, dm0=None):
        a = atoms.copy()
        a.calc = self.calculator
        t0 = time.perf_counter()
        try:
            e = float(a.get_potential_energy())
            f = np.asarray(a.get_forces()) if self.compute_forces else None
            s = np.asarray(a.get_stress(voigt=True)) if (self.compute_stress and a.pbc.all()) else None
        except Exception as err:
            raise TargetEvaluationError(f"{type(self.calculator).__name__} failed: {err}",
                                        settings=self.settings()) from err
        if not np.isfinite(e):
            raise TargetEvaluationError("non-finite energy", settings=self.settings())
        return TargetResult(e, f, s, {"wall_s": time.perf_counter() - t0}), None

    def evaluate(self, atoms_list: Sequence[Any]) -> list[TargetResult]:
        return [self.evaluate_one(a)[0] for a in atoms_list]

    def __call__(self, atoms_list: Sequence[Any]) -> np.ndarray:
        return np.array([r.energy_eV for r in self.evaluate(atoms_list)], dtype=np.float64)
