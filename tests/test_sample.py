"""slhmc_jax.sample end to end with a callable closed-form target and a wrong proposal."""

import ase
import jax.numpy as jnp
import numpy as np
import pytest

import slhmc_jax
from slhmc_jax.integrators import KB_EV_PER_K
from slhmc_jax.models.base import FunctionPotential
from slhmc_jax.targets.base import TargetEvaluationError

T = 300.0
X0 = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])


def _atoms():
    return ase.Atoms("CCC", positions=X0, cell=np.eye(3) * 10.0, pbc=False)


def _target(k):
    return lambda atoms_list: [0.5 * k * float(np.sum((a.positions - X0) ** 2)) for a in atoms_list]


PROPOSAL = FunctionPotential(lambda x, c, z: 0.5 * 3.0 * jnp.sum((x - jnp.asarray(X0)) ** 2))


def _run(**kw):
    args = dict(temperature_K=T, n_chains=64, n_steps=80, trajectory_steps=10, timestep_fs=4.0, seed=7, progress=False)
    args.update(kw)
    return slhmc_jax.sample(_atoms(), PROPOSAL, kw.pop("target", _target(2.0)), **{k: v for k, v in args.items() if k != "target"})


def test_sample_einstein_variance_and_result_shapes():
    res = _run()
    assert res.positions.shape == (64, 80, 3, 3) and res.cells.shape == (64, 80, 3, 3)
    assert res.target_energies.shape == (64, 80) and res.acceptance_rate.shape == (64,)
    var = np.var(res.positions[:, 20:] - X0)
    exact, proposal_only = KB_EV_PER_K * T / 2.0, KB_EV_PER_K * T / 3.0
    assert abs(var / exact - 1) < 0.08, (var, exact)
    assert abs(var / proposal_only - 1) > 0.4
    a = res.samples[3][-1]
    assert a.get_potential_energy() == pytest.approx(res.target_energies[3, -1])
    np.testing.assert_allclose(a.positions, res.positions[3, -1])
    d = res.diagnostics
    assert 0 < d["acceptance"] < 1 and d["ess"] > 100 and len(res.proposal_hash) == 64
    from slhmc_jax.observables import mcmc_diagnostics

    post = mcmc_diagnostics(res.target_energies[:, 20:], np.ones((64, 60), bool))
    assert np.isfinite(post["rhat"]) and post["rhat"] > 0.99
    assert d["ml_energy_error_eV"].shape == (64, 80)


def test_failure_policy_raise_and_reject():
    calls = {"n": 0}

    def flaky(atoms_list):
        calls["n"] += 1
        if calls["n"] == 3:
            raise TargetEvaluationError("SCF did not converge")
        return _target(2.0)(atoms_list)

    _run(target=flaky, n_steps=5)  # one transient failure is retried
    always = lambda al: (_ for _ in ()).throw(TargetEvaluationError("no")) if len(al) > 1 else _target(2.0)(al)
    with pytest.raises(TargetEvaluationError):
        _run(target=always, n_steps=3)
    res = _run(target=always, n_steps=3, on_failure="reject")
    assert res.acceptance_rate.max() == 0.0
    with pytest.raises(ValueError, match="on_failure"):
        _run(on_failure="ignore")


def test_warmup_tunes_timestep_toward_target_acceptance():
    bad = _run(timestep_fs=38.0, n_steps=20, n_chains=32)
    tuned = _run(timestep_fs=38.0, n_steps=20, n_chains=32, warmup_steps=30, target_acceptance=0.7)
    assert bad.diagnostics["acceptance"] < 0.4
    assert tuned.diagnostics["timestep_fs"] < 38.0
    assert abs(tuned.diagnostics["acceptance"] - 0.7) < 0.15
