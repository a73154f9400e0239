"""The target audit: is the stored target energy a single-valued function of the configuration?

SLHMC is exact whatever the proposal only if the target's energy of a configuration does not
depend on how it was reached. Warm starts (a chain's previous orbitals) and the retry ladder
(second-order SCF, smearing-seeded guesses) could land a near-degenerate system on another SCF
solution. :func:`audit_store` re-evaluates a seeded random sample of the label store's states
from a cold start and compares with the stored energies:

    dE_i = E_cold(x_i) - E_stored(x_i),   max |dE| in meV and in kT = k_B T,

with a ``UserWarning`` above ``threshold_kT`` (0.1 kT: an error that shifts Boltzmann weights by
about 10%).

Cold start: the evaluation runs on a fresh copy of the target stack, without its label store
(a :class:`~slhmc_jax.targets.store.CachedTarget` in the stack is removed, so nothing is answered
from the store or written to it: the re-evaluated result has the stored one's key), each wrapper
re-made around the copy (``rewrap``: a dispatcher gets its own, empty warm-start states), the
method itself a ``without_forces()`` copy of a
:class:`~slhmc_jax.targets.base.SingleEvaluationTarget` (its own, empty warm-start states; no
forces, which the comparison does not need), and every configuration its own batch. A target that
keeps state outside the warm-start protocol cannot be made cold here.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings

import numpy as np

from slhmc_jax.targets.base import SingleEvaluationTarget, TargetEvaluationError
from slhmc_jax.targets.stack import TargetWrapper, as_target
from slhmc_jax.targets.store import CachedTarget, LabelStore, config_key
from slhmc_jax.units import KB_EV_PER_K

THRESHOLD_KT = 0.1
DEFAULT_CONFIGURATIONS = 8  # stored states an audit re-evaluates (one cold energy call each)


@dataclasses.dataclass(frozen=True)
class TargetAudit:
    """Stored target energies against cold re-evaluations.

    Attributes:
        keys: (n,) label-store keys of the audited states.
        stored_eV: (n,) stored energies, eV.
        cold_eV: (n,) cold re-evaluations, eV (NaN where the evaluation failed).
        temperature_K: the temperature kT is taken at, K.
        n_stored: distinct states stored under the target's settings (the sampled population).
        target_calls: evaluations the audit asked of the target (failed ones included).
        wall_s: seconds the re-evaluations took.
    """

    keys: tuple
    stored_eV: np.ndarray
    cold_eV: np.ndarray
    temperature_K: float
    n_stored: int
    target_calls: int
    wall_s: float

    @property
    def n(self) -> int:
        return len(self.keys)

    @property
    def dE_eV(self) -> np.ndarray:
        """(n,) E_cold - E_stored, eV (NaN where the evaluation failed)."""
        return self.cold_eV - self.stored_eV

    @property
    def n_failed(self) -> int:
        return int(np.sum(~np.isfinite(self.cold_eV)))

    @property
    def max_abs_dE_meV(self) -> float:
        """Largest |dE| of the evaluations that succeeded, meV (NaN when none did)."""
        d = np.abs(self.dE_eV[np.isfinite(self.dE_eV)])
        return float(d.max() * 1e3) if d.size else float("nan")

    @property
    def max_abs_dE_kT(self) -> float:
        """Largest |dE| in units of k_B T."""
        return self.max_abs_dE_meV * 1e-3 / (KB_EV_PER_K * self.temperature_K)

    def as_dict(self) -> dict:
        """The JSON record (``RunData.metadata["target_audit"]``, read by the report)."""
        return {"n": self.n, "n_stored": self.n_stored, "n_failed": self.n_failed,
                "max_abs_dE_meV": self.max_abs_dE_meV, "max_abs_dE_kT": self.max_abs_dE_kT,
                "temperature_K": self.temperature_K, "target_calls": self.target_calls, "wall_s": round(self.wall_s, 3),
                "dE_meV": [float(v) * 1e3 for v in self.dE_eV], "keys": list(self.keys)}


def cold_target(target):
    """A fresh copy of ``target``'s stack without a label store and without warm-start states
    (see the module docstring); the original and its warm-start states are left as they are."""
    target = as_target(target)
    if isinstance(target, CachedTarget):
        return cold_target(target.target)
    if isinstance(target, TargetWrapper):
        return target.rewrap(cold_target(target.target))
    if isinstance(target, SingleEvaluationTarget):
        return target.without_forces()
    return target


def stored_states(store: LabelStore, settings: dict) -> list:
    """[(key, atoms, stored energy eV)] of the distinct states stored under ``settings``, in storage order."""
    import ase

    out, seen = [], set()
    for numbers, pos, cell, pbc, *_ in store.rows():
        atoms = ase.Atoms(numbers=json.loads(numbers), positions=json.loads(pos), cell=json.loads(cell),
                          pbc=json.loads(pbc))
        key = config_key(atoms, settings)
        if key in seen:
            continue
        result = store.get_by_key(key)  # None: the row belongs to other settings
        if result is not None:
            seen.add(key)
            out.append((key, atoms, float(result.energy_eV)))
    return out


def audit_store(store, target, *, n_configurations: int = DEFAULT_CONFIGURATIONS, temperature_K: float, seed: int = 0,
                threshold_kT: float = THRESHOLD_KT) -> TargetAudit:
    """Re-evaluate a seeded random sample of the stored states of ``target`` from a cold start.

    Args:
        store: a :class:`~slhmc_jax.targets.store.LabelStore` or its path (only read).
        target: the target whose results the store holds (anything ``as_target`` accepts; its
            ``settings()`` select the rows); it is copied, never used itself.
        n_configurations: states to re-evaluate (all of them where fewer are stored).
        temperature_K: sampling temperature, K (for |dE| in kT).
        seed: of the NumPy Generator drawing the sample (without replacement).
        threshold_kT: a UserWarning is issued when max |dE| exceeds it, or when an evaluation fails.

    Returns:
        the :class:`TargetAudit` (``as_dict()`` is what the report reads).
    """
    if not temperature_K or temperature_K <= 0:
        raise ValueError(f"temperature_K must be positive; got {temperature_K!r}")
    if not isinstance(store, LabelStore):
        store = LabelStore(store)
    states = stored_states(store, as_target(target).settings())
    rng = np.random.default_rng(seed)
    n = min(int(n_configurations), len(states))
    picked = sorted(rng.choice(len(states), size=n, replace=False).tolist()) if n else []
    cold = np.full(n, np.nan)
    t0 = time.perf_counter()
    for i, s in enumerate(picked):
        try:
            cold[i] = cold_target(target).evaluate([states[s][1]], [0])[0].energy_eV
        except TargetEvaluationError:
            pass  # NaN: counted in n_failed and warned about
    audit = TargetAudit(keys=tuple(states[s][0] for s in picked), stored_eV=np.array([states[s][2] for s in picked]),
                        cold_eV=cold, temperature_K=float(temperature_K), n_stored=len(states), target_calls=n,
                        wall_s=time.perf_counter() - t0)
    if audit.max_abs_dE_kT > threshold_kT or audit.n_failed:
        warnings.warn(f"target audit: {audit.n} stored states re-evaluated from a cold start differ from the stored "
                      f"energies by up to {audit.max_abs_dE_meV:.4g} meV = {audit.max_abs_dE_kT:.4g} kT at "
                      f"{temperature_K:g} K (threshold {threshold_kT} kT); {audit.n_failed} failed", UserWarning,
                      stacklevel=2)
    return audit
