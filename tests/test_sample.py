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
    from slhmc_jax.diagnostics import chain_statistics

    post = chain_statistics(res.target_energies[:, 20:])
    assert np.isfinite(post.rhat) and post.rhat > 0.99
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


X6 = np.array([[0, 0, 0], [2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0], [2.0, 2.0, 0], [2.0, 0, 2.0]])


def _anharmonic_target(atoms_list):
    """Six atoms of different masses in anharmonic wells: E = sum_i r_i^2 + 0.5 r_i^4 (eV, A)."""
    out = []
    for a in atoms_list:
        r2 = np.sum((a.positions - X6) ** 2, axis=1)
        out.append(float(np.sum(1.0 * r2 + 0.5 * r2**2)))
    return out


def test_warmup_tunes_timestep_and_length_then_freezes_them():
    atoms = ase.Atoms("HCOTiNH", positions=X6, cell=np.eye(3) * 10.0, pbc=False)
    wrong = FunctionPotential(lambda x, c, z: jnp.sum(1.5 * jnp.sum((x - X6) ** 2, 1) + 0.2 * jnp.sum((x - X6) ** 2, 1) ** 2))
    res = slhmc_jax.sample(atoms, wrong, _anharmonic_target, temperature_K=T, n_chains=32, n_steps=30, trajectory_steps=10,
                           timestep_fs=8.0, seed=1, warmup_steps=40, target_acceptance=0.7, progress=False)
    d = res.diagnostics
    warm = d["warmup"]
    # both knobs moved during warm-up (the start, 8 fs x 10 steps, has ML acceptance < 0.6) ...
    assert len(warm) == 40 and warm[0]["ml_acceptance"] < 0.6
    assert len({w["trajectory_steps"] for w in warm}) > 3 and len({w["timestep_fs"] for w in warm}) > 3
    assert d["timestep_fs"] != 8.0 and d["trajectory_steps"] != 10
    # ... and production used one fixed pair of values
    assert np.all(d["production_timestep_fs"] == d["timestep_fs"])
    assert np.all(d["production_trajectory_steps"] == d["trajectory_steps"])
    assert res.positions.shape[1] == 30  # warm-up states are not recorded
    assert abs(d["acceptance"] - 0.7) < 0.1, d["acceptance"]
    assert abs(np.mean(d["acceptance_probability"]) - 0.7) < 0.1


def _lj_system():
    import ase.build

    from slhmc_jax.models import registry

    atoms = ase.build.bulk("Ar", "fcc", a=5.26, cubic=True).repeat((2, 2, 2))
    lj = registry.build("lennard_jones", (18,), epsilon_eV=0.0104, sigma_A=3.4, cutoff_A=5.0, onset_A=4.0)
    sites = atoms.positions.copy()
    target = lambda al: [0.5 * 0.3 * float(np.sum((a.positions - sites) ** 2)) for a in al]  # noqa: E731
    return atoms, lj, target


def test_overflow_mid_trajectory_reruns_and_gives_the_same_chain():
    import dataclasses

    import jax

    from slhmc_jax import hmc
    from slhmc_jax import neighbours as nb
    from slhmc_jax.sampling import propose_chains

    atoms, lj, target = _lj_system()
    n_chains, seed, T_hot = 4, 11, 900.0
    xs = np.repeat(atoms.positions[None], n_chains, 0)
    cells = np.repeat(atoms.cell.array[None], n_chains, 0)
    big, nbrs = nb.allocate(xs, cells, True, 5.0, 0.05, batch=True, capacity_factor=3.0)
    tight = dataclasses.replace(big, capacity=int(np.max(np.asarray(nbrs.n_pairs))))  # fits the start exactly
    # precondition: the first proposal with the tight list overflows mid-trajectory, not at the start
    start = jax.vmap(lambda x, c: nb.build(tight, x, c))(jnp.asarray(xs), jnp.asarray(cells))
    assert not bool(np.any(np.asarray(start.overflow)))
    keys = jax.random.split(jax.random.PRNGKey(seed), n_chains)
    states = jax.vmap(lambda x, c, k: hmc.init(x, c, 0.0, k))(jnp.asarray(xs), jnp.asarray(cells), keys)
    prop = propose_chains(states, lj, None, atoms.numbers, atoms.get_masses(), T_hot, 20, 4.0, tight)
    assert bool(np.any(np.asarray(prop.overflow)))

    kw = dict(temperature_K=T_hot, n_chains=n_chains, n_steps=6, trajectory_steps=20, timestep_fs=4.0, seed=seed,
              skin_A=0.05, progress=False)
    res_tight = slhmc_jax.sample(atoms, lj, target, neighbour_layout=tight, **kw)
    res_big = slhmc_jax.sample(atoms, lj, target, neighbour_layout=big, **kw)
    assert res_tight.diagnostics["neighbour_reallocations"] >= 1
    assert res_big.diagnostics["neighbour_reallocations"] == 0
    np.testing.assert_array_equal(res_tight.diagnostics["acceptance_probability"] > 0, res_big.diagnostics["acceptance_probability"] > 0)
    np.testing.assert_allclose(res_tight.positions, res_big.positions, rtol=0, atol=1e-9)
    np.testing.assert_allclose(res_tight.target_energies, res_big.target_energies, rtol=1e-9, atol=1e-12)
    assert 0 < res_big.acceptance_rate.mean() < 1


def test_proposal_step_compiles_once_across_dt_L_and_runs():
    from slhmc_jax import sampling

    _run(n_steps=2, n_chains=4)
    before = sampling._propose_chains_jit._cache_size()
    _run(n_steps=2, n_chains=4, timestep_fs=3.0, trajectory_steps=7, seed=1)  # other dt, L, seed: same program
    _run(n_steps=4, n_chains=4, warmup_steps=4)  # warm-up changes dt and L every step
    assert sampling._propose_chains_jit._cache_size() == before


def test_mace_edge_slot_overflow_reruns_and_gives_the_same_chain():
    """A MACE proposal whose receiver-major edge slots fit the start exactly: a hot trajectory
    brings second neighbours inside r_max, the model turns NaN, and sample() re-runs the same
    trajectories with more slots: the chain equals one with ample slots (and slots are auto-sized)."""
    import ase.build
    import jax

    from slhmc_jax.models import mace

    atoms = ase.build.bulk("Ar", "fcc", a=5.26, cubic=True).repeat((2, 2, 2))  # 12 neighbours at 3.72 A, 6 at 5.26 A
    h = mace.MACEHyperparameters(atomic_numbers=(18,), atomic_energies_eV=(0.0,), r_max=5.0, num_bessel=4, max_ell=1,
                                 num_interactions=1, hidden_irreps="4x0e", MLP_irreps="4x0e", correlation=2,
                                 radial_MLP=(8,), avg_num_neighbors=12.0, atomic_inter_scale=0.05)
    proposal = mace.build(h, key=jax.random.PRNGKey(1))
    from slhmc_jax.calculator import Calculator

    calc = Calculator(proposal.with_max_neighbours(None))  # the target: the same model on the flat edge list

    def target(atoms_list):
        return [calc.get_potential_energy(a) for a in atoms_list]
    kw = dict(temperature_K=900.0, n_chains=4, n_steps=6, trajectory_steps=20, timestep_fs=4.0, seed=3, progress=False)
    from slhmc_jax import neighbours as nb
    from slhmc_jax.sampling import default_edge_slots

    layout, _ = nb.allocate(atoms.positions, atoms.cell.array, True, 5.0, 0.5)
    assert default_edge_slots(proposal, layout, atoms.positions, atoms.cell.array) == int(np.ceil(1.25 * 12)) + 2
    tight = slhmc_jax.sample(atoms, proposal.with_max_neighbours(12), target, **kw)
    ample = slhmc_jax.sample(atoms, proposal.with_max_neighbours(40), target, **kw)
    assert tight.diagnostics["edge_slot_regrowths"] >= 1 and tight.diagnostics["edge_slots"] > 12
    assert ample.diagnostics["edge_slot_regrowths"] == 0
    assert np.all(np.isfinite(tight.positions)) and ample.acceptance_rate.mean() > 0.5
    np.testing.assert_array_equal(tight.diagnostics["acceptance_probability"] > 0, ample.diagnostics["acceptance_probability"] > 0)
    np.testing.assert_allclose(tight.positions, ample.positions, rtol=0, atol=1e-9)
