"""slhmc_jax.targets.audit: stored target energies re-evaluated from a cold start.

A deterministic target (PySCF H2O PBE/STO-3G, stored warm-started along one chain; ASE EMT) must
give back its stored energies to well under a microelectronvolt; a toy target whose energy
depends on a hidden warm-start state (E + c where a warm state was offered) must be caught, with
|dE| = c exactly, and warned about. The audit never writes to the store.
"""

import warnings

import numpy as np
import pytest
from ase.build import bulk, molecule

from slhmc_jax.targets import SingleEvaluationTarget, TargetResult, timed
from slhmc_jax.targets.audit import audit_store, cold_target
from slhmc_jax.targets.store import LabelStore, cached
from slhmc_jax.units import KB_EV_PER_K


def _rattled(atoms, n, amplitude_A, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = atoms.copy()
        a.positions += rng.normal(0.0, amplitude_A, a.positions.shape)
        out.append(a)
    return out


class WarmShifted(SingleEvaluationTarget):
    """E(x) = sum_i |r_i|^2 (eV/A^2) + c where a warm state was offered: a target that is not single-valued."""

    warm_start = True

    def __init__(self, shift_eV: float, name: str = "warm-shifted"):
        self.shift_eV = shift_eV
        self.name = name
        self.calls = 0

    def settings(self) -> dict:
        return {"method": self.name, "shift_eV": self.shift_eV}

    def evaluate_one(self, atoms, warm=None):
        self.calls += 1
        e = float(np.sum(atoms.positions ** 2)) + (self.shift_eV if warm is not None else 0.0)
        return TargetResult(e), "orbitals"


def _rows(store):
    return [tuple(r) for r in store.rows()]


def test_deterministic_pyscf_target_gives_back_its_stored_energies(tmp_path):
    from slhmc_jax.targets import PySCFTarget

    target = PySCFTarget.preset("pbe", basis="sto-3g", grids_level=0, conv_tol=1e-10)
    store = LabelStore(tmp_path / "labels.sqlite")
    configs = _rattled(molecule("H2O"), 4, 0.03, seed=0)
    # stored as a sampler stores them: one chain, each configuration warm-started from the previous one
    cached(target, store).evaluate(configs, [0] * len(configs))
    stored = [store.get(a, target.settings()) for a in configs]
    assert [r.info["warm_start"] for r in stored] == [False, True, True, True]
    before, n_warm = _rows(store), len(target.warm_starts)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        audit = audit_store(store, target, n_configurations=3, temperature_K=300.0, seed=0)
    assert audit.n == 3 and audit.n_stored == 4 and audit.target_calls == 3 and audit.n_failed == 0
    assert np.max(np.abs(audit.dE_eV)) < 1e-6
    assert audit.max_abs_dE_meV < 1e-3
    assert _rows(store) == before and len(store) == 4  # nothing written
    assert len(target.warm_starts) == n_warm  # the target itself was not used


def test_ase_emt_target_is_single_valued(tmp_path):
    from ase.calculators.emt import EMT

    from slhmc_jax.targets import ASETarget

    target = ASETarget(EMT(), compute_forces=True)
    store = LabelStore(tmp_path / "labels.sqlite")
    configs = _rattled(bulk("Cu", "fcc", a=3.6, cubic=True), 5, 0.05, seed=1)
    cached(target, store).evaluate(configs, [0] * 5)
    audit = audit_store(store, target, n_configurations=8, temperature_K=500.0)
    assert audit.n == 5 and audit.target_calls == 5
    assert np.max(np.abs(audit.dE_eV)) < 1e-6


def test_a_target_with_a_hidden_warm_state_is_caught_and_warned_about(tmp_path):
    c = 0.01  # eV: 0.387 kT at 300 K
    target = WarmShifted(c)
    store = LabelStore(tmp_path / "labels.sqlite")
    configs = _rattled(molecule("H2O"), 6, 0.05, seed=2)
    cached(target, store).evaluate(configs, [0] * 6)  # the first cold, the other five warm: stored E + c
    other = WarmShifted(0.0, name="another-method")  # rows of other settings are not audited
    cached(other, store).evaluate(_rattled(molecule("H2O"), 3, 0.05, seed=3))
    before = _rows(store)
    calls = target.calls
    with pytest.warns(UserWarning, match="target audit"):
        audit = audit_store(store, target, n_configurations=4, temperature_K=300.0, seed=7)
    assert audit.n == 4 and audit.n_stored == 6 and audit.target_calls == 4
    assert target.calls == calls  # a copy was evaluated, not the target
    keys = [cached(target, None).key(a) for a in configs]
    for key, de in zip(audit.keys, audit.dE_eV):
        expected = 0.0 if key == keys[0] else -c  # cold - stored
        assert de == pytest.approx(expected, abs=1e-12)
    # 4 distinct states of 6: at least 3 were stored warm
    assert audit.max_abs_dE_meV == pytest.approx(1e3 * c, rel=1e-9)
    assert audit.max_abs_dE_kT == pytest.approx(c / (KB_EV_PER_K * 300.0), rel=1e-9)
    assert audit.as_dict()["n"] == 4 and len(audit.as_dict()["dE_meV"]) == 4
    assert _rows(store) == before

    # the same seed draws the same states; every state when more are asked for than stored
    with pytest.warns(UserWarning):
        again = audit_store(store, target, n_configurations=4, temperature_K=300.0, seed=7)
    with pytest.warns(UserWarning):
        everything = audit_store(store, target, n_configurations=50, temperature_K=300.0, seed=0)
    assert again.keys == audit.keys
    assert sorted(everything.keys) == sorted(keys) and everything.max_abs_dE_meV == pytest.approx(1e3 * c, rel=1e-9)


def test_wrapped_targets_are_audited_cold_and_without_their_store(tmp_path):
    target = WarmShifted(0.01)
    store = LabelStore(tmp_path / "labels.sqlite")
    configs = _rattled(molecule("H2O"), 3, 0.05, seed=4)
    cached(target, store).evaluate(configs, [0] * 3)
    seconds = []
    wrapped = cached(timed(target, seconds.append), store)  # a store in the stack: it must be bypassed
    wrapped.evaluate(configs[1:2], [5])  # warm state for chain 5 in the wrapped stack
    with pytest.warns(UserWarning, match="target audit"):
        audit = audit_store(store, wrapped, n_configurations=3, temperature_K=300.0)
    assert wrapped.store_hits == 1 and wrapped.target_evaluations == 0  # only the call above, nothing from the audit
    assert audit.max_abs_dE_meV == pytest.approx(10.0, rel=1e-9) and len(store) == 3
    assert len(seconds) == 3  # the timing wrapper was kept: one batch per audited state (the hit above never reached it)
    cold = cold_target(wrapped)
    assert not isinstance(cold, type(wrapped)) and len(cold.target.warm_starts) == 0

    # a single-valued target (no shift) gives no warning
    flat = WarmShifted(0.0, name="flat")
    cached(flat, store).evaluate(configs, [0] * 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        quiet = audit_store(store, flat, temperature_K=300.0)
    assert quiet.n == 3 and quiet.max_abs_dE_meV == 0.0


def test_bad_temperature_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="temperature_K must be positive"):
        audit_store(LabelStore(tmp_path / "s.sqlite"), WarmShifted(0.0), temperature_K=0.0)
