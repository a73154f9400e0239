"""slhmc validate: the thermostats sample the canonical ensemble, SLHMC and direct target MD agree, bad inputs."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slhmc_jax.app import config as cfg
from slhmc_jax.app import validate as val
from slhmc_jax.app import validation_checks as checks
from slhmc_jax.analysis.diagnostics import chain_statistics
from slhmc_jax.sampler import md
from slhmc_jax.units import KB_EV_PER_K

from toy_models import MORSE, BondModel  # tests/toy_models.py

T = 300.0
KT = KB_EV_PER_K * T
# three anisotropic harmonic wells E = sum_ia k_ia x_ia^2 / 2: masses amu, k eV/A^2, nine distinct frequencies
# (omega dt < 0.1 at 1 fs). Not isotropic on purpose: in an isotropic well a global velocity rescaling (Bussi)
# conserves the plane of each atom's orbit, so it could not be ergodic there.
MASSES = np.array([16.0, 47.9, 12.0])
K = np.array([[2.0, 3.0, 4.0], [5.0, 6.5, 8.0], [3.5, 5.0, 9.0]])


def _harmonic_md(thermostat, n_replicas=32, n_steps=2000, burn_in=300, temperature_K=T):
    """(x (R, n, N, 3), T_kin (R, n)) of thermostatted MD in the wells, the kernel's own step functions
    driven by analytic forces inside one lax.scan (the host loop of run_direct_md does the same per step)."""
    s = md.MDSettings(thermostat, temperature_K, 1.0, n_steps, n_replicas, burn_in, friction_per_ps=20.0, tau_fs=50.0,
                      seed=1)
    kernel = md.md_kernel(s, MASSES)
    k = jnp.asarray(K)

    def body(carry, _):
        x, p, f, key = carry
        x, p_half, key = kernel.before_force(x, p, f, key)
        f = -k * x
        p, key = kernel.after_force(p_half, f, key)
        return (x, p, f, key), (x, p)

    @jax.jit
    def run(key):  # one compiled call: start, burn-in and the recorded steps
        key, k0 = jax.random.split(key)
        p = kernel.init(k0, n_replicas)
        x = jnp.zeros_like(p)
        _, (xs, ps) = jax.lax.scan(body, (x, p, -k * x, key), None, length=burn_in + n_steps)
        return xs[burn_in:], ps[burn_in:]

    xs, ps = (np.moveaxis(np.asarray(a), 0, 1) for a in run(jax.random.PRNGKey(s.seed)))
    return xs, md.kinetic_temperature_K(ps, MASSES)


def _mean_and_error(values):
    """Mean of (chains, draws) values and its standard error from the ESS (diagnostics.chain_statistics)."""
    stats = chain_statistics(values)
    return float(np.mean(values)), float(np.std(values) / np.sqrt(stats.ess))


@pytest.mark.parametrize("thermostat", ["baoab", "bussi"])
def test_thermostat_samples_the_harmonic_canonical_distribution(thermostat):
    xs, t_kin = _harmonic_md(thermostat)
    # <k x^2> = kT per component (closed form), and the kinetic temperature is T
    y = (xs**2 * K / KT).mean(axis=(2, 3))
    mean, err = _mean_and_error(y)
    assert abs(mean - 1.0) < 4 * err + 0.005, (thermostat, mean, err)
    mean_t, err_t = _mean_and_error(t_kin / T)
    assert abs(mean_t - 1.0) < 4 * err_t + 0.005, (thermostat, mean_t, err_t)
    assert err < 0.02 and err_t < 0.02  # tight enough to mean something (a 10% hotter thermostat fails, below)
    if thermostat == "baoab":
        # Langevin thermostats every degree of freedom: each well on its own is canonical, and the whole
        # distribution is the Gaussian, not only its variance: <x^4> = 3 (kT/k)^2. (A global velocity rescaling
        # moves energy between a harmonic system's normal modes only slowly: Bussi relies on the system's own
        # mixing, which an anharmonic molecule has and independent wells lack, so only the totals are checked
        # for it here; its kinetic-energy distribution is checked exactly below.)
        per_atom = (xs**2 * K / KT).mean(axis=3)  # (R, n, N)
        for i in range(len(K)):
            m, e = _mean_and_error(per_atom[:, :, i])
            assert abs(m - 1.0) < 4 * e + 0.005, (thermostat, i, m, e)
        z = (xs * np.sqrt(K / KT)).reshape(xs.shape[0], xs.shape[1], -1)
        m4, e4 = _mean_and_error((z**4).mean(axis=2))
        assert abs(m4 - 3.0) < 4 * e4 + 0.03, (m4, e4)


def test_bussi_rescaling_gives_the_canonical_kinetic_energy_distribution():
    """K of n_f = 9 degrees of freedom after repeated rescaling from a cold start: Gamma(n_f / 2, kT),
    mean n_f kT / 2 and variance n_f (kT)^2 / 2 (free particles: no dynamics, the rescaling alone)."""
    from slhmc_jax.sampler import integrators as ig

    m = jnp.asarray(MASSES)
    @jax.jit
    def relax(p, key):  # 200 steps of dt / tau = 1 / 20: 10 relaxation times
        return jax.lax.fori_loop(0, 200, lambda i, p: ig.bussi_rescale(jax.random.fold_in(key, i), p, m, KT,
                                                                       jnp.exp(-1.0 / 20.0)), p)

    p = relax(jnp.full((3000, 3, 3), 0.1), jax.random.PRNGKey(0))
    kinetic = np.asarray(0.5 * jnp.sum(p**2 / m[:, None], axis=(1, 2))) / KT
    n = kinetic.size
    assert abs(kinetic.mean() - 4.5) < 4 * np.sqrt(4.5 / n)  # Gamma(4.5, 1): mean 4.5, variance 4.5
    assert abs(kinetic.var() - 4.5) < 4 * np.sqrt(2 * 4.5**2 * (1 + 3 / 4.5) / n)
    directions = np.asarray(p).reshape(n, -1)
    # a rescaling keeps every replica on its ray (momenta change sign together at most)
    np.testing.assert_allclose(np.abs(directions) / np.linalg.norm(directions, axis=1, keepdims=True), 1 / 3, rtol=1e-12)


def test_a_wrong_temperature_is_caught_by_the_same_check():
    """The check has teeth: a thermostat 10% hotter than T is far outside its error bar."""
    xs, t_kin = _harmonic_md("baoab", temperature_K=1.1 * T)
    mean, err = _mean_and_error((xs**2 * K / KT).mean(axis=(2, 3)))
    assert abs(mean - 1.0) > 4 * err + 0.005 and abs(mean - 1.1) < 4 * err + 0.005
    mean_t, err_t = _mean_and_error(t_kin / T)
    assert abs(mean_t - 1.0) > 4 * err_t + 0.005


# ----------------------------------------------------------------------------------------
# the pipeline on an analytic target: SLHMC and direct MD sample the same distribution


def morse_energy(positions, cell, numbers):
    """ASE's Morse pair energy D (exp(-2 a (r - r0)) - 2 exp(-a (r - r0))) of the dimer, in JAX: the same target
    as the config's, evaluated for all replicas in one compiled call (ASE's costs 5 ms per configuration)."""
    r = jnp.linalg.norm(positions[1] - positions[0])
    e = jnp.exp(-2.0 * (r - 1.2))
    return 1.0 * (e**2 - 2.0 * e)


def target():
    from slhmc_jax.models.base import FunctionPotential
    from slhmc_jax.targets import PotentialTarget

    return PotentialTarget(FunctionPotential(morse_energy))


def foundation():
    """A proposal with the target's stiffness and a bond 0.06 A (about 1.3 thermal widths) short."""
    return BondModel({"k": jnp.asarray(8.0), "r0": jnp.asarray(1.14), "e0": jnp.asarray(-1.0)})


def toy_data(tmp_path=None, **tables) -> dict:
    system = {"structure": "molecule", "name": "N2"}
    if tmp_path is not None:  # start at the target's mean bond length: a short burn-in suffices
        import ase
        import ase.io

        path = tmp_path / "n2.xyz"
        ase.io.write(path, ase.Atoms("N2", positions=[[5, 5, 5], [6.215, 5, 5]], cell=np.eye(3) * 10.0, pbc=False))
        system = {"structure": "file", "path": str(path)}
    data = {
        "run": {"seed": 3},
        "system": system,
        "model": {"foundation": "registry:none"},
        "target": {"code": "ase", "calculator": "morse", "parameters": MORSE},
        "sampler": {"temperature_K": T, "n_chains": 16, "n_steps": 30, "trajectory_steps": 10, "timestep_fs": 1.0,
                    "warmup_steps": 8, "burn_in_steps": 10},
        "finetune": {"epochs": 25, "batch_size": 32, "learning_rate": 0.03, "refit_e0": False, "ema_decay": None,
                     "early_stopping_patience": None, "valid_fraction": 0.2, "schedule": "constant",
                     "forces_weight": 10.0, "plot": False},
        "evaluation": {"pairs": [["N", "N"]], "k": 1, "n_bootstrap": 100},
        "cost": {"seconds_per_call": 0.001},
        "validate": {"thermostat": "baoab", "friction_per_ps": 20.0, "timestep_fs": 1.0, "md_steps": 200,
                     "replicas": 8, "burn_in_steps": 40, "finetune_structures": 200},
    }
    for name, values in tables.items():
        data[name] = data.get(name, {}) | values
    return data


@pytest.fixture(scope="module")
def toy_validation(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("validate")
    config = cfg.validation_from_dict(toy_data(run_dir), source="toy")
    path = val.run(config, run_dir, foundation=foundation(), target=target(), progress=False)
    return run_dir, json.loads(path.read_text())


def test_slhmc_and_direct_md_sample_the_same_distribution(toy_validation):
    run_dir, data = toy_validation
    nn = "nn_N-N_A"
    for key in ("ess_per_target_call_ratio", "ks_pvalue", "ks_statistic", "wasserstein", "ess_per_target_second_ratio"):
        assert set(data[key]) == {"foundation", "finetuned"}, key
        assert set(data[key]["foundation"]) == {nn, "target_energy_eV"}, key
    for proposal in ("foundation", "finetuned"):
        for obs in (nn, "target_energy_eV"):
            assert np.isfinite(data["ess_per_target_call_ratio"][proposal][obs]) and data["ess_per_target_call_ratio"][proposal][obs] > 0
            assert data["ks_pvalue"][proposal][obs] > 0.01, (proposal, obs, data["ks_pvalue"])
            w, lo, hi = data["wasserstein"][proposal][obs]
            assert 0 <= lo <= w <= hi and np.isfinite(hi)
    # both sample the Morse dimer's Boltzmann distribution p(r) ~ r^2 exp(-V(r) / kT): the mean bond length by
    # quadrature, within 4 standard errors (from each sampler's ESS)
    r = np.linspace(0.8, 2.0, 20001)
    e = np.exp(-2.0 * (r - 1.2))
    weight = r**2 * np.exp(-(e**2 - 2.0 * e) / KT)
    mean_r = np.sum(r * weight) / np.sum(weight)
    sd_r = np.sqrt(np.sum((r - mean_r) ** 2 * weight) / np.sum(weight))
    assert 1.21 < mean_r < 1.22  # r0 = 1.2 A, plus the r^2 Jacobian and the anharmonic expansion
    for sampler in ("direct_md", "foundation", "finetuned"):
        err = sd_r / np.sqrt(data["ess"][sampler][nn])
        assert abs(data["means"][sampler][nn] - mean_r) < 4 * err, (sampler, data["means"][sampler][nn], mean_r, err)
    # the thermostat held the temperature, the MD spent one force call per replica and step (the start: one)
    assert abs(data["kinetic_temperature_K"]["mean"] / T - 1) < 0.1
    assert data["target_calls"]["direct_md"] == 1 + 8 * (40 + 200)
    # fine-tuning on the direct-MD labels moved the proposal toward the target: higher acceptance
    assert data["acceptance"]["finetuned"] > data["acceptance"]["foundation"]
    assert data["finetune"]["source"] == "direct_md" and data["finetune"]["extra_target_calls"] == 0
    # the Morse dimer's energy is rotation invariant; the check's 4 energy calls are reported, not charged
    assert data["rotation_check"]["energy_spread_eV"] < 1e-9 and data["rotation_check"]["n_target_calls"] == 4
    # every target result is in the label store (MD frames with forces)
    from slhmc_jax.targets.store import LabelStore

    assert len(LabelStore(run_dir / "labels.sqlite")) >= 8 * 240
    assert (run_dir / "validation.md").read_text().startswith("# SLHMC validation")
    assert (run_dir / "figures" / f"validation_{nn}.png").stat().st_size > 1000


def test_rerun_reads_back_every_phase(toy_validation, monkeypatch):
    run_dir, data = toy_validation

    def fail(*a, **k):
        raise AssertionError("a finished phase was run again")

    monkeypatch.setattr(val, "run_direct_md", fail)
    monkeypatch.setattr("slhmc_jax.sample", fail)
    again = json.loads(val.run(cfg.validation_from_dict(toy_data(run_dir), source="toy"), run_dir, foundation=foundation(),
                               target=target(), progress=False).read_text())
    assert again["ks_pvalue"] == data["ks_pvalue"] and again["target_calls"] == data["target_calls"]
    with pytest.raises(cfg.ConfigError, match="another config"):  # phases of one config are never mixed with another's
        val.Validation(cfg.validation_from_dict(toy_data(run_dir, validate={"md_steps": 300})), run_dir,
                       foundation=foundation(), target=target())


# ----------------------------------------------------------------------------------------
# errors at the boundary


@pytest.mark.parametrize("temperature", [None, 0.0, -5.0, float("nan")])
def test_a_thermostat_without_a_temperature_is_refused(temperature):
    with pytest.raises(ValueError, match="needs a temperature"):
        md.MDSettings("baoab", temperature, 1.0, 10)


def test_config_errors_name_table_and_key():
    with pytest.raises(cfg.ConfigError, match=r"\[validate\] friction: unknown key"):
        cfg.validation_from_dict(toy_data(validate={"friction": 1.0}))
    with pytest.raises(cfg.ConfigError, match=r"\[validate\] temperature_K"):
        cfg.validation_from_dict(toy_data(validate={"temperature_K": -1.0}))
    with pytest.raises(cfg.ConfigError, match=r"\[validate\] temperature_K.*differs"):
        cfg.validation_from_dict(toy_data(validate={"temperature_K": 500.0}))
    with pytest.raises(cfg.ConfigError, match=r"\[validate\] thermostat"):
        cfg.validation_from_dict(toy_data(validate={"thermostat": "berendsen"}))  # not canonical
    with pytest.raises(cfg.ConfigError, match=r"\[validate\] md_steps"):
        cfg.validation_from_dict(toy_data(validate={"md_steps": 1}))
    with pytest.raises(cfg.ConfigError, match=r"\[validate\] proposals"):
        cfg.validation_from_dict(toy_data(validate={"proposals": ["relabel"]}))
    with pytest.raises(cfg.ConfigError, match="unknown table"):
        cfg.validation_from_dict(toy_data(validation={"md_steps": 10}))
    with pytest.raises(cfg.ConfigError, match=r"\[sampler\] ensemble"):
        cfg.validation_from_dict(toy_data(sampler={"ensemble": "npt", "pressure_GPa": 0.0}))


def test_a_system_too_large_for_direct_md_is_refused_before_anything_runs(tmp_path):
    config = cfg.validation_from_dict(toy_data(validate={"max_atoms": 1}))
    with pytest.raises(cfg.ConfigError, match=r"\[validate\] max_atoms: the system has 2 atoms"):
        val.Validation(config, tmp_path / "a", foundation=foundation())
    # 8 x (1 + 40 + 200) calls x 2 s = 3856 s > 3600 s
    config = cfg.validation_from_dict(toy_data(validate={"max_md_cost_s": 3600.0}, cost={"seconds_per_call": 2.0}))
    with pytest.raises(cfg.ConfigError, match=r"max_md_cost_s: direct target MD would need 1928 force calls"):
        val.Validation(config, tmp_path / "b", foundation=foundation())
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_bussi_on_a_free_molecule_is_warned_of():
    import warnings

    with pytest.warns(UserWarning, match="not ergodic"):
        checks.warn_if_thermostat_not_ergodic(md.MDSettings("bussi", T, 1.0, 10), (False, False, False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither a periodic crystal under Bussi nor BAOAB on a molecule
        checks.warn_if_thermostat_not_ergodic(md.MDSettings("bussi", T, 1.0, 10), (True, True, True))
        checks.warn_if_thermostat_not_ergodic(md.MDSettings("baoab", T, 1.0, 10), (False, False, False))


def test_a_target_that_depends_on_orientation_is_warned_of():
    """A dimer energy with a term in the bond's direction (an external field, as a coarse fixed integration grid
    acts): the rotation check measures its spread exactly and warns; the isotropic Morse passes."""
    import ase
    from ase.units import kB

    from slhmc_jax.models.base import FunctionPotential
    from slhmc_jax.targets import PotentialTarget

    field = 0.05  # eV

    def anisotropic(positions, cell, numbers):
        d = positions[1] - positions[0]
        return morse_energy(positions, cell, numbers) + field * (d[0] / jnp.linalg.norm(d)) ** 2

    dimer = ase.Atoms("N2", positions=[[0, 0, 0], [1.2, 0, 0]])
    with pytest.warns(UserWarning, match="not rotation invariant"):
        check = checks.check_rotation_invariance(dimer, PotentialTarget(FunctionPotential(anisotropic)), T)
    axis_cos = []
    for angle, axis in checks.ROTATION_CHECK:
        a = dimer.copy()
        a.rotate(angle, axis, center="COM")
        d = a.positions[1] - a.positions[0]
        axis_cos.append(d[0] / np.linalg.norm(d))
    expected = field * (1.0 - min(c**2 for c in axis_cos))  # the bond starts along x: cos^2 = 1, the maximum
    assert check.energy_spread_eV == pytest.approx(expected, rel=1e-9) and check.kT_eV == pytest.approx(kB * T)
    assert not check.invariant and check.n_target_calls == 4
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert checks.check_rotation_invariance(dimer, target(), T).energy_spread_eV < 1e-12


def test_cli_validate_reports_config_errors(tmp_path, capsys):
    from slhmc_jax.app import cli

    path = tmp_path / "bad.toml"
    path.write_text("[validate]\nthermostat = 'nose'\n")
    assert cli.main(["validate", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    assert "[validate] thermostat" in capsys.readouterr().err


def test_cli_validate_reports_a_failed_target_without_a_traceback(tmp_path, capsys, monkeypatch):
    from slhmc_jax.app import cli
    from slhmc_jax.targets.base import TargetEvaluationError

    def failing_run(config, run_dir, progress=True):
        raise TargetEvaluationError("SCF did not converge for O2Ti after the retry ladder ['plain', 'newton']")

    monkeypatch.setattr(val, "run", failing_run)
    with pytest.raises(SystemExit) as info:
        cli.main(["validate", "--run-dir", str(tmp_path / "run"), "--quiet"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "the target failed: SCF did not converge for O2Ti" in err and "Traceback" not in err
    assert str(tmp_path / "run" / "labels.sqlite") in err and "resumes" in err


def test_packaged_default_and_example_configs_are_valid_and_the_same():
    from pathlib import Path

    packaged = cfg.load_validation(cfg.validate_path())
    example = cfg.load_validation(Path(__file__).parents[1] / "examples" / "validate.toml")
    assert dataclasses.replace(packaged.workflow, source="") == dataclasses.replace(example.workflow, source="")
    assert packaged.validate == example.validate
    assert packaged.workflow.target.xc == "pbe" and packaged.workflow.system.name == "TiO2"
