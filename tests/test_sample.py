"""slhmc_jax.sample end to end with a callable closed-form target and a wrong proposal."""

import ase
import jax.numpy as jnp
import numpy as np
import pytest

import slhmc_jax
from slhmc_jax.units import KB_EV_PER_K
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
    target, proposal = args.pop("target", _target(2.0)), args.pop("proposal", PROPOSAL)
    return slhmc_jax.sample(_atoms(), proposal, target, **args)


def test_sample_einstein_variance_and_result_shapes():
    res = _run()
    assert res.positions.shape == (64, 80, 3, 3) and res.cells.shape == (64, 80, 3, 3)
    assert res.target_energies.shape == (64, 80) and res.acceptance_rate.shape == (64,)
    assert res.accepted.shape == (64, 80) and res.accepted.dtype == bool
    np.testing.assert_array_equal(res.acceptance_rate, res.accepted.mean(1))
    np.testing.assert_array_equal(res.hmc_acceptance_rate, res.acceptance_rate)  # NVT: every move is an HMC move
    assert res.cell_acceptance_rate is None
    var = np.var(res.positions[:, 20:] - X0)
    exact, proposal_only = KB_EV_PER_K * T / 2.0, KB_EV_PER_K * T / 3.0
    assert abs(var / exact - 1) < 0.08, (var, exact)
    assert abs(var / proposal_only - 1) > 0.4
    a = res.samples[3][-1]
    assert a.get_potential_energy() == pytest.approx(res.target_energies[3, -1])
    np.testing.assert_allclose(a.positions, res.positions[3, -1])
    d = res.diagnostics
    energy = d.mcmc.observables["target_energy_eV"]
    assert 0 < d.acceptance < 1 and energy.ess > 100 and len(res.proposal_hash) == 64
    from slhmc_jax.analysis.diagnostics import chain_statistics

    post = chain_statistics(res.target_energies[:, 20:])
    assert np.isfinite(post.rhat) and post.rhat > 0.99
    assert d.ml_energy_error_eV.shape == (64, 80)
    # a structural observable has its diagnostics too: the C-C nearest-neighbour distance
    name, stats = res.structural_statistics()
    assert name == "nn_C-C_A" and stats.ess > 100 and stats.rhat < 1.1
    # no warm-up: the first 10% of the run is burn-in, not recorded (the start structure is not kept)
    assert d.burn_in_steps == 8 and d.warmup_steps == 0
    assert d.n_judged == 1 + 64 * (8 + 80)  # the 64 identical start structures are one configuration


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
    warm = d.warmup
    # both knobs moved during warm-up (the start, 8 fs x 10 steps, has ML acceptance < 0.6) ...
    assert len(warm) == 40 and warm[0].ml_acceptance < 0.6
    assert len({w.trajectory_steps for w in warm}) > 3 and len({w.timestep_fs for w in warm}) > 3
    assert d.timestep_fs != 8.0 and d.trajectory_steps != 10
    # ... and production used one fixed pair of values
    assert np.all(d.production_timestep_fs == d.timestep_fs)
    assert np.all(d.production_trajectory_steps == d.trajectory_steps)
    assert res.positions.shape[1] == 30 and d.burn_in_steps == 0  # warm-up states are not recorded
    assert abs(d.acceptance - 0.7) < 0.1, d.acceptance
    assert abs(np.mean(d.acceptance_probability) - 0.7) < 0.1


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

    from slhmc_jax.sampler import kernels as hmc
    from slhmc_jax import neighbours as nb

    atoms, lj, target = _lj_system()
    n_chains, seed, T_hot = 4, 11, 900.0
    xs = np.repeat(atoms.positions[None], n_chains, 0)
    cells = np.repeat(atoms.cell.array[None], n_chains, 0)
    big, nbrs = nb.allocate(xs, cells, True, 5.0, 0.05, batch=True, capacity_factor=3.0)
    tight = dataclasses.replace(big, capacity=int(np.max(np.asarray(nbrs.n_pairs))))  # fits the start exactly
    # precondition: the first proposal with the tight list overflows mid-trajectory, not at the start
    start = jax.vmap(lambda x, c: nb.build(tight, x, c))(jnp.asarray(xs), jnp.asarray(cells))
    assert not bool(np.any(np.asarray(start.overflow)))
    states = hmc.init(xs, cells, np.zeros(n_chains), seed)
    prop = hmc.hmc_kernel(lj, atoms.numbers, atoms.get_masses(), T_hot, layout=tight).propose(states, None, 4.0, 20)
    assert bool(np.any(np.asarray(prop.overflow)))

    kw = dict(temperature_K=T_hot, n_chains=n_chains, n_steps=6, trajectory_steps=20, timestep_fs=4.0, seed=seed,
              skin_A=0.05, burn_in_steps=0, progress=False)
    res_tight = slhmc_jax.sample(atoms, lj, target, neighbour_layout=tight, **kw)
    res_big = slhmc_jax.sample(atoms, lj, target, neighbour_layout=big, **kw)
    assert res_tight.diagnostics.neighbour_reallocations >= 1
    assert res_big.diagnostics.neighbour_reallocations == 0
    np.testing.assert_array_equal(res_tight.diagnostics.acceptance_probability > 0,
                                  res_big.diagnostics.acceptance_probability > 0)
    np.testing.assert_allclose(res_tight.positions, res_big.positions, rtol=0, atol=1e-9)
    np.testing.assert_allclose(res_tight.target_energies, res_big.target_energies, rtol=1e-9, atol=1e-12)
    assert 0 < res_big.acceptance_rate.mean() < 1


def test_proposal_step_compiles_once_across_dt_L_and_runs():
    from slhmc_jax.sampler import kernels as hmc

    _run(n_steps=2, n_chains=4)
    before = hmc._propose_hmc_jit._cache_size(), hmc._accept_hmc_jit._cache_size()
    _run(n_steps=2, n_chains=4, timestep_fs=3.0, trajectory_steps=7, seed=1)  # other dt, L, seed: same program
    _run(n_steps=4, n_chains=4, warmup_steps=4)  # warm-up changes dt and L every step
    _run(n_steps=2, n_chains=4, temperature_K=500.0)  # so does the temperature
    assert (hmc._propose_hmc_jit._cache_size(), hmc._accept_hmc_jit._cache_size()) == before


def test_mace_dense_neighbour_overflow_reruns_and_gives_the_same_chain():
    """A MACE proposal (dense per-atom neighbour format) whose slots fit the start exactly: a hot
    trajectory brings more neighbours inside the search radius, the list overflows, and sample()
    re-runs the same trajectories with more slots: the chain equals one with ample slots."""
    import dataclasses

    import ase.build
    import jax

    from slhmc_jax import neighbours as nb
    from slhmc_jax import testing
    from slhmc_jax.models import mace

    atoms = ase.build.bulk("Ar", "fcc", a=5.26, cubic=True).repeat((2, 2, 2))  # 12 neighbours at 3.72 A, 6 at 5.26 A
    h = mace.MACEHyperparameters(atomic_numbers=(18,), atomic_energies_eV=(0.0,), r_max=5.0, num_bessel=4, max_ell=1,
                                 num_interactions=1, hidden_irreps="4x0e", MLP_irreps="4x0e", correlation=2,
                                 radial_MLP=(8,), avg_num_neighbors=12.0, atomic_inter_scale=0.05)
    proposal = mace.build(h, key=jax.random.PRNGKey(1))
    assert proposal.prefers_dense_neighbours

    def target(atoms_list):  # the same model on the flat pair list (an independent code path)
        return [testing.evaluate(proposal, a)[0] for a in atoms_list]

    kw = dict(temperature_K=900.0, n_chains=4, n_steps=6, trajectory_steps=20, timestep_fs=4.0, seed=3, skin_A=0.5,
              burn_in_steps=0, progress=False)
    xs, cells = np.repeat(atoms.positions[None], 4, 0), np.repeat(atoms.cell.array[None], 4, 0)
    auto, nbrs = nb.allocate(xs, cells, True, 5.0, 0.5, batch=True, max_neighbours="auto")
    assert int(np.max(np.asarray(nbrs.max_per_atom))) == 18  # both shells inside 5.5 A
    assert auto.max_neighbours == nb.with_headroom(18)
    tight = dataclasses.replace(auto, max_neighbours=18)
    ample = dataclasses.replace(auto, max_neighbours=40)
    res_tight = slhmc_jax.sample(atoms, proposal, target, neighbour_layout=tight, **kw)
    res_ample = slhmc_jax.sample(atoms, proposal, target, neighbour_layout=ample, **kw)
    assert res_tight.diagnostics.neighbour_reallocations >= 1 and res_tight.diagnostics.max_neighbours > 18
    assert res_ample.diagnostics.neighbour_reallocations == 0
    assert np.all(np.isfinite(res_tight.positions)) and res_ample.acceptance_rate.mean() > 0.5
    np.testing.assert_array_equal(res_tight.diagnostics.acceptance_probability > 0,
                                  res_ample.diagnostics.acceptance_probability > 0)
    np.testing.assert_allclose(res_tight.positions, res_ample.positions, rtol=0, atol=1e-9)


# ---- one target boundary: a raw ASE calculator, a Target and a plain function fail alike


def _harmonic_energy(a):
    return 0.5 * 2.0 * float(np.sum((a.positions - X0) ** 2))


def _in_failing_region(a) -> bool:
    """Where the 'SCF' never converges: a deterministic function of the configuration."""
    return bool(a.positions[1, 0] > X0[1, 0] + 0.1)  # ~1 thermal width out along x


class _FlakyCalculator:
    """A raw ASE calculator that raises in the failing region, and (``transient``) also on the
    first attempt at every configuration (a failure that a retry cures)."""

    def __new__(cls, transient=False, region=True):
        from ase.calculators.calculator import Calculator, all_changes

        class Flaky(Calculator):
            implemented_properties = ["energy"]

            def __init__(self):
                super().__init__()
                self.seen = set()

            def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
                super().calculate(atoms, properties, system_changes)
                key = self.atoms.positions.tobytes()
                if transient and key not in self.seen:
                    self.seen.add(key)
                    raise RuntimeError("transient failure")
                if region and _in_failing_region(self.atoms):
                    raise RuntimeError("SCF did not converge")
                self.results["energy"] = _harmonic_energy(self.atoms)

        return Flaky()


def _failing_function(atoms_list):
    if any(_in_failing_region(a) for a in atoms_list):  # a batch function: it cannot say which one failed
        raise TargetEvaluationError("SCF did not converge")
    return [_harmonic_energy(a) for a in atoms_list]


def test_failing_configurations_reject_only_their_chain_for_every_kind_of_target():
    """Issue 11 #4 / issue 17 #1: a raw ASE calculator, the same calculator as an ASETarget and a plain
    function that raise in one region give the chain of the target truncated to where it converges
    (there: an energy that rejects every move in), chain by chain: only the failing chain rejects."""
    from slhmc_jax.targets import ASETarget

    kw = dict(n_chains=16, n_steps=24, on_failure="reject", max_retries=1, seed=5)
    truncated = _run(target=lambda al: [1e300 if _in_failing_region(a) else _harmonic_energy(a) for a in al], **kw)
    runs = {"ase calculator": _run(target=_FlakyCalculator(), **kw),
            "ASETarget": _run(target=ASETarget(_FlakyCalculator(), compute_forces=False), **kw),
            "function": _run(target=_failing_function, **kw)}
    for name, res in runs.items():
        np.testing.assert_array_equal(res.positions, truncated.positions, err_msg=name)
        np.testing.assert_array_equal(res.accepted, truncated.accepted, err_msg=name)
        assert res.diagnostics.n_failed == runs["function"].diagnostics.n_failed > 10, name
    # not vacuous: failing configurations were proposed, and the other chains of those batches accepted
    failed_moves = np.array([[_in_failing_region(a) for a in chain] for chain in truncated.samples])
    assert not failed_moves.any()  # no chain ever entered the region
    assert truncated.accepted.mean() > 0.3
    with pytest.raises(TargetEvaluationError, match="did not converge"):
        _run(target=_FlakyCalculator(), **(kw | {"on_failure": "raise"}))


def test_transient_failures_are_retried_for_every_kind_of_target():
    from slhmc_jax.targets import ASETarget

    kw = dict(n_chains=8, n_steps=6, seed=2)
    clean = _run(target=_FlakyCalculator(region=False), **kw)
    for target in (_FlakyCalculator(transient=True, region=False),
                   ASETarget(_FlakyCalculator(transient=True, region=False), compute_forces=False)):
        res = _run(target=target, max_retries=1, **kw)
        np.testing.assert_array_equal(res.positions, clean.positions)
        assert res.diagnostics.n_failed == 0
    with pytest.raises(TargetEvaluationError, match="transient"):
        _run(target=_FlakyCalculator(transient=True, region=False), max_retries=0, **kw)


@pytest.mark.parametrize("change,match", [
    (dict(temperature_K=-5.0), "temperature_K"),
    (dict(n_chains=0), "n_chains"),
    (dict(n_steps=2.5), "n_steps"),
    (dict(ensemble="npt"), "pressure_GPa"),
    (dict(ensemble="nve"), "ensemble"),
    (dict(timestep_fs=float("nan")), "timestep_fs"),
    (dict(on_failure="ignore"), "on_failure"),
    (dict(target_acceptance=1.0), "target_acceptance"),
    (dict(burn_in_steps=-1), "burn_in_steps"),
    (dict(timestep_jitter=1.0), "timestep_jitter"),
    (dict(temperature="300"), "temperature"),
])
def test_bad_settings_are_clear_errors_before_anything_is_compiled(change, match):
    from slhmc_jax.sampler import kernels as hmc

    before = hmc._propose_hmc_jit._cache_size()
    calls = []
    with pytest.raises(ValueError, match=match):
        _run(target=lambda al: calls.append(1) or [0.0] * len(al), **change)
    assert not calls and hmc._propose_hmc_jit._cache_size() == before


def test_proposal_species_must_cover_the_structure():
    from slhmc_jax.models import registry

    lj = registry.build("lennard_jones", (18,), epsilon_eV=0.01, sigma_A=3.4, cutoff_A=5.0)
    with pytest.raises(ValueError, match=r"\['C'\] not in the species table \['Ar'\]"):
        _run(proposal=lj)


def test_a_model_file_is_a_proposal(tmp_path):
    """The path of a saved MACE model samples exactly like the model object it was saved from."""
    import jax

    from slhmc_jax.models import mace

    h = mace.MACEHyperparameters(atomic_numbers=(6,), atomic_energies_eV=(0.0,), r_max=4.0, num_bessel=4, max_ell=1,
                                 num_interactions=1, hidden_irreps="4x0e", MLP_irreps="4x0e", correlation=2,
                                 radial_MLP=(8,), avg_num_neighbors=2.0, atomic_inter_scale=0.1)
    model = mace.build(h, key=jax.random.PRNGKey(2))
    mace.save(model, tmp_path / "proposal.npz")
    kw = dict(n_chains=4, n_steps=3, trajectory_steps=4, timestep_fs=1.0, burn_in_steps=0)
    from_file = _run(proposal=str(tmp_path / "proposal.npz"), **kw)
    direct = _run(proposal=model, **kw)
    assert from_file.proposal_hash == direct.proposal_hash
    np.testing.assert_array_equal(from_file.positions, direct.positions)


# ---- divergent trajectories (issue 17 #2, #3)


class _CountingTarget:
    def __init__(self, fn):
        self.fn, self.n = fn, 0

    def __call__(self, atoms_list):
        self.n += len(atoms_list)
        return self.fn(atoms_list)


def test_a_proposal_that_is_nan_in_a_region_is_counted_and_warned_about():
    """The model is NaN beyond 0.12 A from the sites: trajectories that get there diverge, are counted,
    rejected without a target call, and a warning says so; the chains still sample the target."""
    nan_far = FunctionPotential(lambda x, c, z: jnp.where(jnp.max(jnp.abs(x - X0)) > 0.12, jnp.nan,
                                                          0.5 * 3.0 * jnp.sum((x - X0) ** 2)))
    target = _CountingTarget(_target(2.0))
    with pytest.warns(RuntimeWarning, match="diverged"):
        res = _run(proposal=nan_far, target=target, n_chains=16, n_steps=30, burn_in_steps=0)
    d = res.diagnostics
    assert d.divergent_trajectories.sum() > 0.05 * 16 * 30
    judged = np.isfinite(d.ml_energy_error_eV)  # divergent proposals carry NaN
    assert np.count_nonzero(~judged) == d.divergent_trajectories.sum()
    assert target.n == 1 + judged.sum() == d.n_judged == d.n_target_calls  # no call for a divergent chain
    assert not np.any(res.accepted & ~judged)
    assert np.all(np.abs(res.positions - X0) <= 0.12 + 1e-12)  # never accepted into the NaN region


def test_a_too_large_timestep_neither_grows_the_neighbour_slots_nor_calls_the_target():
    atoms, lj, sites_target = _lj_system()
    target = _CountingTarget(sites_target)
    xs, cells = np.repeat(atoms.positions[None], 4, 0), np.repeat(atoms.cell.array[None], 4, 0)
    from slhmc_jax import neighbours as nb

    layout, _ = nb.allocate(xs, cells, True, 5.0, 0.5, batch=True, max_neighbours="auto")  # dense slots, as MACE's
    with pytest.warns(RuntimeWarning, match="diverged"):
        res = slhmc_jax.sample(atoms, lj, target, temperature_K=900.0, n_chains=4, n_steps=6, trajectory_steps=20,
                               timestep_fs=60.0, seed=4, skin_A=0.5, burn_in_steps=0, neighbour_layout=layout,
                               progress=False)
    d = res.diagnostics
    assert d.divergent_trajectories.sum() >= 12  # most trajectories blow up at 60 fs
    assert d.neighbour_reallocations == 0 and d.max_neighbours == layout.max_neighbours
    judged = np.isfinite(d.ml_energy_error_eV)
    assert target.n == 1 + judged.sum()


# ---- delayed acceptance: sample(..., screen=)


def test_a_screen_saves_target_calls_and_counts_them():
    """Same seed and settings, with and without a (wrong: 10% too stiff) screen: the screened run
    calls the target less, and the counters add up."""
    plain, screened = _CountingTarget(_target(2.0)), _CountingTarget(_target(2.0))
    cheap = _CountingTarget(_target(2.2))
    kw = dict(n_chains=16, n_steps=24, seed=5)
    r0 = _run(target=plain, **kw)
    r1 = _run(target=screened, screen=cheap, **kw)
    d0, d1 = r0.diagnostics, r1.diagnostics
    assert screened.n < plain.n
    assert screened.n == d1.n_target_calls == 1 + d1.n_stage_two  # the start, then only what passed stage one
    assert cheap.n == d1.n_screen_calls == 1 + d1.n_screen_rejected + d1.n_stage_two
    assert d1.n_screen_rejected == plain.n - screened.n and d1.target_calls_saved_fraction > 0.1
    assert 0 < d1.stage_two_acceptance <= 1 and d1.screened and not d0.screened
    assert d1.n_stage_two_accepted >= r1.accepted.sum()  # warm-up/burn-in accepts are counted too
    assert d0.n_screen_calls == 0 and d0.target_calls_saved_fraction == 0.0
    assert d1.target_cpu_s > 0 and d1.target_wall_s > 0 and d1.screen_wall_s > 0
    assert 0.2 < d1.acceptance < 1 and r1.accepted.dtype == bool


def test_screen_bad_inputs_are_clear_errors():
    from slhmc_jax.models import registry
    from slhmc_jax.targets import PotentialTarget, PySCFTarget

    target = _target(2.0)
    with pytest.raises(ValueError, match="screen is the target itself"):
        _run(target=target, screen=target, n_chains=4, n_steps=2)
    lj = registry.build("lennard_jones", (18,), epsilon_eV=0.01, sigma_A=3.4, cutoff_A=5.0)
    with pytest.raises(ValueError, match=r"screen cannot evaluate this system: element\(s\) \['C'\]"):
        _run(screen=PotentialTarget(lj), n_chains=4, n_steps=2)
    with pytest.raises(ValueError, match="screen evaluates periodic cells only"):  # the system is a molecule
        _run(screen=PySCFTarget("pbe", kpts=(2, 2, 2)), n_chains=4, n_steps=2)
    with pytest.raises(ValueError, match="screen: target must be"):
        _run(screen=42, n_chains=4, n_steps=2)
    with pytest.raises(ValueError, match="screen could not evaluate the start structure"):
        _run(screen=lambda al: [float("nan")] * len(al), n_chains=4, n_steps=2, on_failure="reject", max_retries=0)


def test_screen_and_target_periodicity_must_agree():
    from slhmc_jax.sampler.driver import check_screen
    from slhmc_jax.targets import PySCFTarget, as_target

    atoms = _atoms()
    atoms.pbc = True
    periodic, molecular = PySCFTarget("pbe", kpts=(1, 1, 1)), as_target(_target(2.0))
    molecular.periodic = False
    with pytest.raises(ValueError, match="screen is periodic but the target is molecular"):
        check_screen(periodic, molecular, molecular, atoms)
    with pytest.warns(RuntimeWarning, match="same settings"):
        check_screen(PySCFTarget("pbe"), PySCFTarget("pbe"), PySCFTarget("pbe"), _atoms())
