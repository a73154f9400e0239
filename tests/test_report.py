"""slhmc analyze and slhmc_jax.analysis.report on run directories written from real runs.

The end-to-end case is a real SLHMC run (H2O, PySCF PBE/STO-3G judge, harmonic proposal) as
the target reference, plus a "foundation" arm of exact draws from the proposal model's own
distribution; the report's distances are checked against scipy on distances computed here
from the positions, and every figure is checked to be a real PNG with drawn content.
"""

import dataclasses
import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from scipy.stats import wasserstein_distance

import slhmc_jax
from slhmc_jax.analysis import run_directory as rd
from slhmc_jax.analysis.report import ReportSettings, analyze, report_dict, write_report
from slhmc_jax.app import cli
from slhmc_jax.structures import rutile
from slhmc_jax.units import KB_EV_PER_K

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _water_proposal():
    """A harmonic valence model of H2O near PBE/STO-3G: r0 = 1.02 A, k_r = 45 eV/A^2, theta0 = 97 deg,
    k_theta = 4 eV/rad^2 (E = sum k_r/2 (r - r0)^2 + k_theta/2 (theta - theta0)^2)."""
    import jax.numpy as jnp

    from slhmc_jax.models import FunctionPotential

    r0, k_r, theta0, k_theta = 1.02, 45.0, np.deg2rad(97.0), 4.0

    def energy(positions, cell, numbers):
        d1, d2 = positions[1] - positions[0], positions[2] - positions[0]
        r1, r2 = jnp.linalg.norm(d1), jnp.linalg.norm(d2)
        theta = jnp.arccos(jnp.clip(jnp.dot(d1, d2) / (r1 * r2), -1 + 1e-12, 1 - 1e-12))
        return 0.5 * k_r * ((r1 - r0) ** 2 + (r2 - r0) ** 2) + 0.5 * k_theta * (theta - theta0) ** 2

    return FunctionPotential(energy)


def _harmonic_water_energies(atoms_list):
    """The proposal's own energy on the host: it is the foundation arm's 'target'."""
    proposal = _water_proposal()
    return np.array([float(proposal.energy_fn(a.positions, None, None)) for a in atoms_list])


@pytest.fixture(scope="module")
def water_run_dir(tmp_path_factory):
    from slhmc_jax.targets import PySCFTarget

    atoms = molecule("H2O")
    proposal = _water_proposal()
    kw = dict(temperature_K=300.0, trajectory_steps=10, timestep_fs=0.25, progress=False)
    target = PySCFTarget.preset("pbe", basis="sto-3g", grids_level=0, conv_tol=1e-8)
    # both runs share one compiled proposal (same model, same chain count)
    slhmc = slhmc_jax.sample(atoms, proposal, target, n_chains=2, n_steps=5, seed=0, **kw)
    foundation = slhmc_jax.sample(atoms, proposal, _harmonic_water_energies, n_chains=2, n_steps=10, seed=1, **kw)
    reference, trace = rd.reference_from_sample(slhmc)
    arm_frames, _ = rd.reference_from_sample(foundation)
    run = rd.RunData(
        reference=reference,
        arms=(rd.Arm("foundation", arm_frames),),
        sampler=trace,
        temperature_K=300.0,
        metadata={"note": "test"},
    )
    path = rd.write_run_directory(tmp_path_factory.mktemp("water") / "run", run)
    return path, slhmc, foundation


def _o_h_distances(positions):
    """(n_chains, n_frames, 2) sorted O-H bond lengths of H2O frames (O first), A."""
    d = np.linalg.norm(positions[:, :, 1:, :] - positions[:, :, :1, :], axis=-1)
    return np.sort(d, axis=-1)


def _assert_real_png(path):
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    img = mpimg.imread(path)
    h, w = img.shape[:2]
    assert h >= 300 and w >= 500, (path, img.shape)
    rgb = img[..., :3]
    non_white = np.mean(np.any(rgb < 0.95, axis=-1))
    colours = np.unique((rgb * 255).astype(np.uint8).reshape(-1, 3), axis=0).shape[0]
    # axes, ticks, text and data: a few percent of the pixels drawn, many distinct colours (antialiasing)
    assert 0.02 < non_white < 0.9, (path, non_white)
    assert colours > 50, (path, colours)
    return img


def _has_colour(img, rgb, tol=0.06):
    return bool(np.any(np.all(np.abs(img[..., :3] - np.asarray(rgb)) < tol, axis=-1)))


def test_analyze_run_directory_from_real_sample_run(water_run_dir):
    path, slhmc, foundation = water_run_dir
    assert cli.main(["analyze", str(path), "--bootstrap", "300"]) == 0
    report = json.loads((path / "report.json").read_text())
    # report.json key structure the workflow fills: arms.<arm>.wasserstein.<observable> = [W1, lo, hi]
    w = report["arms"]["foundation"]["wasserstein"]["nn_O-H_A"]
    assert len(w) == 3 and w[1] <= w[0] <= w[2]
    # the distance is that of the O-H bond lengths computed here from the stored positions
    ref = _o_h_distances(slhmc.positions).ravel()
    arm = _o_h_distances(foundation.positions).ravel()
    assert w[0] == pytest.approx(wasserstein_distance(ref, arm), rel=1e-12)
    assert report["reference"]["means"]["nn_O-H_A"] == pytest.approx(ref.mean(), rel=1e-12)
    assert report["arms"]["foundation"]["means"]["nn_O-H_A"] == pytest.approx(arm.mean(), rel=1e-12)
    assert set(report["arms"]["foundation"]["rdf_distance"]) == {"O-H", "H-H"}
    assert report["settings"]["k"] == 2 and report["metadata"] == {"note": "test"}
    # sampler diagnostics come from the stored trace and agree with the sampler's own
    s = report["sampler"]
    np.testing.assert_allclose(s["acceptance_per_chain"], slhmc.acceptance_rate, rtol=0, atol=1e-12)
    assert s["n_chains"] == 2 and s["n_steps"] == 5 and s["ml_energy_error_eV"]["n"] == 10

    md = (path / "report.md").read_text()
    figures = sorted((path / "figures").glob("*.png"))
    names = {f.name for f in figures}
    assert names == {"rdf_O-H.png", "rdf_H-H.png", "nn_O-H.png", "sampler_traces.png", "ml_energy_error.png"}
    assert set(report["figures"]) == {f"figures/{n}" for n in names}
    for f in figures:
        assert f"](figures/{f.name})" in md
        img = _assert_real_png(f)
        if f.name.startswith(("rdf", "nn")):
            assert _has_colour(img, (0.0, 0.0, 0.0))  # the reference, drawn in black
            assert _has_colour(img, (0.12, 0.47, 0.71))  # the foundation arm, tab:blue
    assert "| W1 nn_O-H_A (A) |" in md and "foundation" in md


def test_trace_carries_the_samplers_decisions(water_run_dir):
    _, slhmc, _ = water_run_dir
    _, trace = rd.reference_from_sample(slhmc)
    np.testing.assert_array_equal(trace.accepted, slhmc.accepted)
    assert trace.target_evaluations == slhmc.diagnostics.n_target_calls
    # a rejected move leaves the state unchanged; a move accepted with probability 1 is accepted
    p = np.asarray(slhmc.diagnostics.acceptance_probability)
    assert np.all(trace.accepted[p >= 1.0])
    same = np.all(slhmc.positions[:, 1:] == slhmc.positions[:, :-1], axis=(2, 3))
    assert np.all(same[~trace.accepted[:, 1:]])


def test_run_directory_round_trip_and_errors(water_run_dir, tmp_path):
    path, _, _ = water_run_dir
    run = rd.read_run_directory(path)
    again = rd.read_run_directory(rd.write_run_directory(tmp_path / "copy", run))
    for a, b in [(run.reference, again.reference), (run.arms[0].frames, again.arms[0].frames)]:
        for field in ("positions", "cells", "atomic_numbers", "target_energies"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        np.testing.assert_array_equal(a.pbc, b.pbc)
    np.testing.assert_array_equal(run.sampler.accepted, again.sampler.accepted)
    assert again.temperature_K == 300.0 and again.metadata == {"note": "test"}

    (tmp_path / "copy" / "manifest.json").unlink()
    with pytest.raises(ValueError, match="has no manifest.json"):
        rd.read_run_directory(tmp_path / "copy")
    manifest = json.loads((path / "manifest.json").read_text())
    bad = tmp_path / "bad"
    rd.write_run_directory(bad, run)
    (bad / "manifest.json").write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(ValueError, match="version 99 is not supported"):
        rd.read_run_directory(bad)
    other = rd.trajectory_from_atoms([molecule("CH4")] * 2)
    with pytest.raises(ValueError, match="arm 'x' has 5 atoms, the reference 3"):
        rd.RunData(reference=run.reference, arms=(rd.Arm("x", other),))
    with pytest.raises(ValueError, match="arm name 'a/b'"):
        rd.Arm("a/b", other)


def _rutile_frames(n, rattle, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = rutile(repeat=(1, 1, 2))
        atoms.set_cell(np.asarray(atoms.cell) * scale, scale_atoms=True)
        atoms.positions += rng.normal(0.0, rattle, atoms.positions.shape)
        out.append(atoms)
    return out


def test_analyze_compares_two_trajectory_files(tmp_path):
    import ase.io

    ref, traj = tmp_path / "ref.extxyz", tmp_path / "md run.extxyz"
    ase.io.write(ref, _rutile_frames(16, 0.05, 0))
    ase.io.write(traj, _rutile_frames(16, 0.10, 1, scale=1.01))
    out = tmp_path / "cmp"
    assert cli.main(["analyze", str(traj), "--reference", str(ref), "--out", str(out), "--bootstrap", "200", "--bins", "50"]) == 0
    report = json.loads((out / "report.json").read_text())
    arm = report["arms"]["md_run"]
    assert set(arm["wasserstein"]) == {"nn_Ti-O_A"}  # NVT-like: cells constant, no cell metrics
    w = arm["wasserstein"]["nn_Ti-O_A"]
    assert 0 < w[1] <= w[0] <= w[2]
    assert set(arm["rdf_distance"]) == {"Ti-O", "Ti-Ti", "O-O"}
    for f in (out / "figures").glob("*.png"):
        _assert_real_png(f)

    # an NPT-like pair of trajectories gets cell metrics and their figure
    ref_npt = _rutile_frames(16, 0.05, 2)
    for i, a in enumerate(ref_npt):
        a.set_cell(np.asarray(a.cell) * (1 + 0.002 * np.sin(i)), scale_atoms=True)
    ase.io.write(ref, ref_npt)
    assert cli.main(["analyze", str(traj), "--reference", str(ref), "--out", str(out), "--bootstrap", "100", "--bins", "50", "--pair", "Ti", "O"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert {"a_A", "c_A", "c_over_a", "volume_A3"} <= set(report["arms"]["md_run"]["wasserstein"])
    img = _assert_real_png(out / "figures" / "cell_metrics.png")
    assert img.shape[1] > 1000


def test_analyze_bad_input_is_a_clear_error(tmp_path, capsys):
    import ase.io

    ref, traj = tmp_path / "ref.extxyz", tmp_path / "traj.extxyz"
    ase.io.write(ref, _rutile_frames(3, 0.05, 0))
    ase.io.write(traj, [rutile(repeat=(1, 1, 1))] * 3)
    assert cli.main(["analyze", str(traj), "--reference", str(ref)]) == 2
    assert "arm 'traj' has 6 atoms, the reference 12" in capsys.readouterr().err
    assert cli.main(["analyze", str(ref), "--reference", str(ref), "--pair", "Zr", "O"]) == 2
    assert "element 'Zr' is not in the frames" in capsys.readouterr().err
    assert cli.main(["analyze", str(tmp_path / "missing")]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_importance_ess_of_a_training_set_enters_the_report():
    frames = rd.trajectory_from_atoms(_rutile_frames(6, 0.05, 3))
    e_s = np.zeros(50)
    e_t = np.linspace(-0.05, 0.05, 50)  # target - source energies of the relabel set, eV
    run = rd.RunData(frames, (rd.Arm("relabel", frames, rd.TrainingEnergies(e_t, e_s)),), temperature_K=300.0)
    rep = report_dict(analyze(run, ReportSettings(n_bootstrap=50, n_bins=50)))
    beta = 1 / (KB_EV_PER_K * 300.0)
    w = np.exp(-beta * e_t)
    assert rep["arms"]["relabel"]["importance_ess"] == pytest.approx(w.sum() ** 2 / (w.size * (w * w).sum()), rel=1e-12)
    # the arm is the reference itself: every distance is 0, and so is the interval's lower end
    for v in list(rep["arms"]["relabel"]["wasserstein"].values()) + list(rep["arms"]["relabel"]["rdf_distance"].values()):
        assert v[0] == 0.0 and v[1] == 0.0 and v[2] > 0.0


def test_trajectory_from_atoms_checks_atom_counts():
    water = molecule("H2O")
    with pytest.raises(ValueError, match="chain 0 frame 1 has 5"):
        rd.trajectory_from_atoms([water, molecule("CH4")])
    with pytest.raises(ValueError, match="chains must have equal lengths"):
        rd.trajectory_from_atoms([[water, water], [water]])
    assert rd.trajectory_from_atoms([Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])]).n_frames == 1


# ----------------------------------------------------------------------------------------
# failed diagnostics first, target audit, provenance


def _water_chains(n_chains, n_frames, seed, stretch_per_chain_A=0.0):
    """H2O frames with independent Gaussian displacements (0.02 A); chain c's H atoms moved out by
    c * stretch_per_chain_A along their bonds (chains that never mix when it is not 0)."""
    rng = np.random.default_rng(seed)
    base = molecule("H2O")
    chains = []
    for c in range(n_chains):
        frames = []
        for _ in range(n_frames):
            a = base.copy()
            for h in (1, 2):
                u = a.positions[h] - a.positions[0]
                a.positions[h] += c * stretch_per_chain_A * u / np.linalg.norm(u)
            a.positions += rng.normal(0.0, 0.02, a.positions.shape)
            frames.append(a)
        chains.append(frames)
    return rd.trajectory_from_atoms(chains)


def _lines_before_first_table(md):
    lines = md.splitlines()
    return lines[: next(i for i, line in enumerate(lines) if line.startswith("|"))]


def test_failed_diagnostics_open_the_report(tmp_path):
    import arviz as az


    # the quickstart's shape: 4 chains x 9 steps, chains that have not mixed, one chain stuck
    rng = np.random.default_rng(11)
    energies = 0.05 * np.arange(4)[:, None] + 0.005 * rng.normal(size=(4, 9))
    energies[3] = energies[3, 0]
    accepted = rng.random((4, 9)) < 0.6
    accepted[3] = False
    trace = rd.SamplerTrace(energies, accepted, target_evaluations=36)
    audit = {"n": 8, "n_stored": 36, "max_abs_dE_meV": 5.0, "max_abs_dE_kT": 5.0e-3 / (KB_EV_PER_K * 300.0),
             "temperature_K": 300.0, "target_calls": 8}
    run = rd.RunData(_water_chains(4, 9, seed=5, stretch_per_chain_A=0.01), sampler=trace, temperature_K=300.0,
                     metadata={"target_audit": audit})
    analysis = analyze(run, ReportSettings(n_bootstrap=50, n_bins=50))
    rep = report_dict(analysis)
    kinds = [w["kind"] for w in rep["warnings"]]
    assert kinds == ["rhat", "ess", "stuck_chain", "few_frames", "target_audit"]
    messages = {w["kind"]: w["message"] for w in rep["warnings"]}
    assert f"target energy {float(az.rhat(energies)):.3f}" in messages["rhat"]
    per_frame = np.linalg.norm(run.reference.positions[:, :, 1:] - run.reference.positions[:, :, :1], axis=-1).mean(-1)
    assert rep["reference"]["rhat"]["nn_O-H_A"] == pytest.approx(float(az.rhat(per_frame)), rel=1e-12)
    assert rep["reference"]["ess"]["nn_O-H_A"] == pytest.approx(float(az.ess(per_frame, method="bulk")), rel=1e-12)
    assert rep["reference"]["rhat"]["nn_O-H_A"] > 1.01 and "nn_O-H_A" in messages["rhat"]
    assert "chain 3 accepted none of its 9 moves" in messages["stuck_chain"]
    assert "36 frames" in messages["few_frames"] and "0.193 kT" in messages["target_audit"]
    assert rep["target_audit"] == audit and "target_audit" not in rep["metadata"]

    files = write_report(analysis, tmp_path, figures=())
    md = files.markdown.read_text()
    opening = "\n".join(_lines_before_first_table(md))
    for w in rep["warnings"]:
        assert w["message"] in opening
    assert opening.index("WARNING") < opening.index("- system")
    assert "## Target audit" in md and "5 meV" in md
    assert json.loads(files.json.read_text())["warnings"] == rep["warnings"]

    # the caller's own ESS verdict replaces the fallback; none given short: no ESS warning
    short = dataclasses.replace(run, metadata={"reference": {"short_of_min_ess": {"nn_O-H_A": 12.5}, "min_ess": 200}})
    messages = {w.kind: w.message for w in analyze(short, ReportSettings(n_bootstrap=20, n_bins=20)).warnings}
    assert "nn_O-H_A 12.5" in messages["ess"] and "target_audit" not in messages
    named = dataclasses.replace(run, metadata={"reference": {"short_of_min_ess": ["target_energy_eV"], "min_ess": 300,
                                                              "ess": {"target_energy_eV": 41.0, "nn_O-H_A": 350.0}}})
    message = next(w.message for w in analyze(named, ReportSettings(n_bootstrap=20, n_bins=20)).warnings if w.kind == "ess")
    assert "target of 300" in message and "target_energy_eV 41" in message and "nn_O-H_A" not in message
    enough = dataclasses.replace(run, metadata={"reference": {"short_of_min_ess": []}})
    assert "ess" not in [w.kind for w in analyze(enough, ReportSettings(n_bootstrap=20, n_bins=20)).warnings]


def test_a_converged_reference_opens_without_warnings(tmp_path):
    rng = np.random.default_rng(12)
    n_chains, n_frames = 4, 250  # independent draws: ESS about 1000, R-hat 1 + O(1/n)
    trace = rd.SamplerTrace(0.01 * rng.normal(size=(n_chains, n_frames)), rng.random((n_chains, n_frames)) < 0.7)
    audit = {"n": 8, "max_abs_dE_meV": 0.1, "max_abs_dE_kT": 1e-4 / (KB_EV_PER_K * 300.0), "temperature_K": 300.0}
    run = rd.RunData(_water_chains(n_chains, n_frames, seed=6), sampler=trace, temperature_K=300.0,
                     metadata={"target_audit": audit})
    analysis = analyze(run, ReportSettings(n_bootstrap=20, n_bins=50))
    assert analysis.warnings == ()
    assert analysis.sampler.rhat < 1.01 and analysis.sampler.ess > 200
    md = (write_report(analysis, tmp_path, figures=()).markdown).read_text()
    assert "WARNING" not in md and "within the 0.1 kT" in md


def test_report_records_its_provenance(tmp_path):
    import hashlib
    import os
    import subprocess
    from importlib.metadata import version

    import scipy

    from slhmc_jax.analysis.provenance import provenance

    run = rd.RunData(_water_chains(2, 4, seed=7), temperature_K=300.0, metadata={"note": "x"})
    rep = report_dict(analyze(run, ReportSettings(n_bootstrap=20, n_bins=20)))
    prov = rep["provenance"]
    assert prov["recorded"] == "report" and prov["config_sha256"] is None
    assert prov["packages"]["numpy"] == np.__version__ and prov["packages"]["scipy"] == scipy.__version__
    assert prov["slhmc_jax"]["version"] == version("slhmc-jax")
    assert prov["host"]["cpu_count"] == os.cpu_count()
    assert sum(d["count"] for d in prov["devices"]) == len(__import__("jax").devices())
    assert rep["metadata"] == {"note": "x"}
    commit = prov["slhmc_jax"]["git_commit"]
    if commit is not None:  # running from a git checkout
        root = os.path.dirname(os.path.dirname(slhmc_jax.__file__))
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], check=False, capture_output=True, text=True).stdout.strip()
        assert commit == head and isinstance(prov["slhmc_jax"]["git_dirty"], bool)

    config = '[run]\nseed = 3\n'
    stored = rd.RunData(run.reference, temperature_K=300.0, metadata={"provenance": provenance(config), "note": "x"})
    analysis = analyze(stored, ReportSettings(n_bootstrap=20, n_bins=20))
    rep = report_dict(analysis)
    assert rep["provenance"]["recorded"] == "run" and rep["metadata"] == {"note": "x"}
    assert rep["provenance"]["config_sha256"] == hashlib.sha256(config.encode()).hexdigest()
    md = write_report(analysis, tmp_path, figures=()).markdown.read_text()
    tail = md[md.index("## Provenance"):]
    assert hashlib.sha256(config.encode()).hexdigest() in tail and f"numpy {np.__version__}" in tail
