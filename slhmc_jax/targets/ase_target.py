"""Any ASE calculator (EMT, VASP, CP2K, GPAW, ...) as an SLHMC target."""

from __future__ import annotations

import time

import numpy as np

from slhmc_jax.targets.base import SingleEvaluationTarget, TargetEvaluationError, TargetResult


class ASETarget(SingleEvaluationTarget):
    """Energies (eV), forces (eV/A) and stress (eV/A^3, when periodic and supported) from an ASE calculator.

    Any exception the calculator raises, and a non-finite energy, becomes a TargetEvaluationError
    (so the sampler's retries and failure policy apply).

    Args:
        calculator: an ase calculator instance (it is attached to a copy of each configuration).
        compute_forces: also request forces.
        compute_stress: also request stress (periodic cells only).
    """

    warm_start = False

    def __init__(self, calculator, compute_forces: bool = True, compute_stress: bool = False):
        self.calculator = calculator
        self.compute_forces = compute_forces
        self.compute_stress = compute_stress

    def settings(self) -> dict:
        calc = self.calculator
        return {"method": "ase", "calculator": type(calc).__name__,
                "parameters": {k: repr(v) for k, v in sorted(getattr(calc, "parameters", {}).items())}}

    def evaluate_one(self, atoms, warm=None) -> tuple[TargetResult, None]:
        a = atoms.copy()
        a.calc = self.calculator
        t0 = time.perf_counter()
        try:
            e = float(a.get_potential_energy())
            f = np.asarray(a.get_forces()) if self.compute_forces else None
            s = np.asarray(a.get_stress(voigt=True)) if (self.compute_stress and a.pbc.all()) else None
        except Exception as err:  # the calculator's own failure, whatever its type
            raise TargetEvaluationError(f"{type(self.calculator).__name__} failed: {err!r}",
                                        settings=self.settings()) from err
        if not np.isfinite(e):
            raise TargetEvaluationError(f"{type(self.calculator).__name__} returned a non-finite energy ({e})",
                                        settings=self.settings())
        return TargetResult(e, f, s, {"wall_s": time.perf_counter() - t0}), None
