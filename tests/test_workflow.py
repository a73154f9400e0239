"""slhmc run: the self-learning workflow and its control arms, end to end on cheap targets; the config."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from slhmc_jax.app import config as cfg
from slhmc_jax.app import workflow

from toy_models import MORSE, BondModel  # tests/toy_models.py


def foundation():
    """The 'source functional' model: the target's stiffness at the minimum, the wrong bond length
    (1.0 A, 3.5 thermal widths short of the target's 1.2 A)."""
    return BondModel({"k": jnp.asarray(8.0), "r0": jnp.asarray(1.0), "e0": jnp.asarray(-1.0)})


def toy_config(**tables) -> cfg.WorkflowConfig:
    data = {
        "run": {"iterations": 2, "seed": 3},
        "system": {"structure": "molecule", "name": "N2"},
        "model": {"foundation": "registry:none"},
        "target": {"code": "ase", "calculator": "morse", "parameters": MORSE},
        "sampler": {"temperature_K": 300.0, "n_chains": 16, "n_steps": 30, "trajectory_steps": 10,
                    "timestep_fs": 1.0, "warmup_steps": 8, "burn_in_steps": 40},
        "finetune": {"epochs": 50, "batch_size": 32, "learning_rate": 0.03, "refit_e0": False, "ema_decay": None,
                     "early_stopping_patience": None, "valid_fraction": 0.2, "schedule": "constant",
                     "forces_weight": 10.0, "plot": False},
        "relabel": {"n_chains": 16, "warmup_steps": 8, "burn_in_steps": 8, "trajectory_steps": 10, "timestep_fs": 1.0},
        "evaluation": {"n_chains": 16, "n_steps": 200, "warmup_steps": 8, "burn_in_steps": 8,
                       "trajectory_steps": 10, "timestep_fs": 1.0, "pairs": [["N", "N"]], "k": 1, "n_bootstrap": 300},
        "reference": {"n_chains": 8, "warmup_steps": 8, "burn_in_steps": 8, "trajectory_steps": 10, "timestep_fs": 1.0,
                      "min_ess": 100.0, "chunk_steps": 20, "max_steps": 60},
    }
    for name, values in tables.items():
        data[name] = data.get(name, {}) | values
    return cfg.from_dict(data, source="toy")


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy")
    report = workflow.run(toy_config(), path, foundation=foundation(), progress=False)
    return path, json.loads(report.read_text())


def test_the_papers_claim_in_miniature(toy_run):
    """Done-when 3: the slhmc arm's fine-tuned model reproduces the target's bond-length distribution
    better than both the relabel arm (same target, same count, same recipe, source-distributed
    configurations) and the foundation, by more than the intervals' width."""
    _, report = toy_run
    w = {arm: report["arms"][arm]["wasserstein"]["nn_N-N_A"] for arm in ("foundation", "relabel", "slhmc")}
    for other in ("relabel", "foundation"):
        assert w["slhmc"][2] < w[other][1], (w["slhmc"], other, w[other])  # slhmc's upper bound below their lower
    # the relabel set came from the wrong distribution, and the meter says so
    assert report["arms"]["relabel"]["importance_ess"] < 0.5
    assert set(report["time_breakdown_s"]) >= {"target_dft", "ml_sampling", "training", "analysis"}
    its = report["metadata"]["iterations"]
    assert len(its) == 2 and its[1]["acceptance"] > its[0]["acceptance"]  # a better proposal accepts more


def test_the_run_directory_holds_what_the_report_needs(toy_run):
    from slhmc_jax.analysis import run_directory as rd
    from slhmc_jax.targets.store import LabelStore

    path, report = toy_run
    run = rd.read_run_directory(path)
    assert {a.name for a in run.arms} == {"foundation", "relabel", "slhmc"}
    assert (path / "report.md").exists() and (path / "figures").is_dir()
    assert (path / "models" / "slhmc_2.params.npz").exists() and (path / "models" / "relabel.params.npz").exists()
    rows = len(LabelStore(path / "labels.sqlite"))
    assert report["metadata"]["dft_calls"]["store_rows"] == rows
    # the same command on the finished directory does nothing new and gives the same report
    again = json.loads(workflow.run(toy_config(), path, foundation=foundation(), progress=False).read_text())
    assert again["arms"] == report["arms"] and len(LabelStore(path / "labels.sqlite")) == rows
    with pytest.raises(cfg.ConfigError, match="another config"):
        workflow.run(toy_config(run={"iterations": 3}), path, foundation=foundation(), progress=False)


def _store_keys(path):
    from slhmc_jax.analysis import run_directory as rd

    return {str(k) for k in rd.read_frames(path).store_keys.ravel()}


def test_the_reference_is_its_own_run_never_trained_on_and_sized_by_its_ess(toy_run):
    """Done-when 3: no reference frame is in any arm's training set (by label-store key: the reference has
    its own store, and none of its keys is in the run's, which holds every training label); its ESS (arviz,
    recomputed here from the bond lengths) reaches min_ess or the run stopped at max_steps saying so; and
    its frames are exact draws of the Morse target: the mean bond length by quadrature within 4 standard errors."""
    import arviz as az

    from slhmc_jax.analysis import run_directory as rd
    from slhmc_jax.targets.store import LabelStore
    from slhmc_jax.units import KB_EV_PER_K

    path, report = toy_run
    meta, config = report["metadata"]["reference"], toy_config().reference
    reference = rd.read_frames(path / "reference.npz")
    keys = _store_keys(path / "reference.npz")
    store = LabelStore(path / "labels.sqlite")
    assert all(store.get_by_key(k) is None for k in keys)
    for k in range(2):
        assert not keys & _store_keys(path / "slhmc" / f"iter_{k}" / "samples.npz")
    assert len(LabelStore(path / "reference" / "labels.sqlite")) == report["metadata"]["dft_calls"]["reference_store_rows"]
    # sized by ESS: chunk_steps at a time, up to max_steps
    bond = np.linalg.norm(reference.positions[:, :, 0] - reference.positions[:, :, 1], axis=-1)  # (chains, steps)
    ess = float(az.ess(bond, method="bulk"))
    assert reference.n_chains == config.n_chains and meta["n_steps"] == reference.n_frames
    assert reference.n_frames % config.chunk_steps == 0 and reference.n_frames <= config.max_steps
    assert abs(ess - meta["ess"]["nn_N-N_A"]) < 0.01 * ess
    if meta["short_of_min_ess"]:
        assert reference.n_frames == config.max_steps
    else:
        assert min(meta["ess"].values()) >= config.min_ess
        shorter = bond[:, : reference.n_frames - config.chunk_steps]  # one chunk fewer was not enough
        assert shorter.shape[1] == 0 or min(float(az.ess(shorter, method="bulk")),
                                            float(az.ess(reference.target_energies[:, : shorter.shape[1]], method="bulk"))) < config.min_ess
    # exact draws of p(r) ~ r^2 exp(-V(r) / kT), V the Morse target (D = 1 eV, a = 2 / A, r0 = 1.2 A)
    r = np.linspace(0.8, 2.0, 20001)
    e = np.exp(-2.0 * (r - 1.2))
    weight = r**2 * np.exp(-(e**2 - 2.0 * e) / (KB_EV_PER_K * 300.0))
    mean_r = np.sum(r * weight) / np.sum(weight)
    sd_r = np.sqrt(np.sum((r - mean_r) ** 2 * weight) / np.sum(weight))
    assert abs(bond.mean() - mean_r) < 4 * sd_r / np.sqrt(ess), (bond.mean(), mean_r, sd_r / np.sqrt(ess))


def _check_replicates(path, n_replicates):
    """Each arm has ``n_replicates`` evaluation trajectories, valid (the start structure's atoms, finite,
    the bond in a physical range) and different (own seeds); the relabel replicates drew their own training
    sets and no two replicates share a fine-tuned model."""
    from slhmc_jax.analysis import replicates as reps
    from slhmc_jax.analysis import run_directory as rd

    run = rd.read_run_directory(path)
    per_arm = reps.arm_observables(run, [("N", "N")], 1)
    for arm in run.arms:
        assert arm.n_replicates == n_replicates and arm.frames is arm.replicates[0]
        for frames in arm.replicates:
            assert list(frames.atomic_numbers) == [7, 7] and np.all(np.isfinite(frames.positions))
            bond = np.linalg.norm(frames.positions[:, :, 0] - frames.positions[:, :, 1], axis=-1)
            assert 0.7 < bond.min() and bond.max() < 2.0
        for i in range(1, n_replicates):
            assert not np.allclose(arm.replicates[i].positions, arm.replicates[0].positions)
        chains = per_arm[arm.name]["nn_N-N_A"]  # the verdict's input: replicates x chains x (n_draws, 2)
        assert len(chains) == n_replicates and all(len(c) == arm.frames.n_chains for c in chains)
        assert chains[0][0].shape == (arm.frames.n_frames, 2)  # each N atom: its one nearest N
    def params(name):  # every parameter of a saved model, as one vector (file bytes carry zip timestamps)
        with np.load(path / "models" / f"{name}.params.npz") as data:
            return np.concatenate([data[k].ravel() for k in sorted(data.files) if k != "leaf_paths"])

    names = ["relabel", "slhmc_2"] + [f"{n}_r{i}" for n in ("relabel", "slhmc_2") for i in range(1, n_replicates)]
    vectors = [params(n) for n in names]
    assert all(not np.array_equal(a, b) for i, a in enumerate(vectors) for b in vectors[i + 1:])
    relabel = [rd.read_frames(path / workflow.replicate_name("relabel", i) / "samples.npz") for i in range(n_replicates)]
    assert not np.allclose(relabel[0].positions, relabel[1].positions)


KILL_SCRIPT = r"""
import os, sys
sys.path.insert(0, os.environ["SLHMC_TESTS"])
from ase.calculators.morse import MorsePotential
from test_workflow import MORSE, foundation, toy_config
from slhmc_jax.app import workflow


class Counted(MorsePotential):
    # one line per completed target evaluation, fsynced (the store commits right after): the
    # configuration's fingerprint, so a test can tell which completed results reached a store
    def calculate(self, atoms=None, *args, **kwargs):
        super().calculate(atoms, *args, **kwargs)
        from test_workflow import fingerprint
        with open(os.environ["SLHMC_COUNTER"], "a") as fh:
            fh.write(fingerprint(self.atoms.numbers, self.atoms.positions) + "\n"); fh.flush(); os.fsync(fh.fileno())


config = toy_config(run={"iterations": 2, "replicates": 2}, sampler={"n_chains": 4, "n_steps": 6, "warmup_steps": 2, "burn_in_steps": 2},
                    relabel={"n_chains": 4, "warmup_steps": 2, "burn_in_steps": 2},
                    evaluation={"n_chains": 4, "n_steps": 12, "warmup_steps": 2, "burn_in_steps": 2, "n_bootstrap": 50},
                    reference={"n_chains": 4, "warmup_steps": 2, "burn_in_steps": 2, "chunk_steps": 6, "max_steps": 18,
                               "min_ess": 1000.0},
                    finetune={"epochs": 4, "batch_size": 8})
workflow.run(config, sys.argv[1], foundation=foundation(), target=Counted(**MORSE), progress=False)
"""


def _kill_run(tmp_path, kills):
    """Run the cheap workflow in a subprocess killed (SIGKILL) at each of ``kills`` (("calls", n): once
    the label store holds n results, so the kill lands in the next target call; ("reference", n): the
    same in the reference run's store; ("fraction", f): at
    f x the uninterrupted run's wall time), then rerun to completion. Returns (total completed target
    calls, the uninterrupted run's, calls at each kill, resumed report, uninterrupted report).

    A call in flight at the kill has not completed and is not counted. A call that completed (its line
    written) but whose result the store had not committed when SIGKILL landed is lost with the process:
    the rerun must make it again, and only it. Returned per kill as ``lost`` (completed calls of the
    killed process whose configuration is in neither store), so the caller can assert exactly
    total = uninterrupted + sum(lost)."""
    from test_store import _rows  # the store's row count, read-only while another process writes it

    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, SLHMC_TESTS=str(root / "tests"), JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))

    def lines(path):
        return len(path.read_text().splitlines()) if path.exists() else 0

    def start(name, counter):
        return subprocess.Popen([sys.executable, str(script), str(tmp_path / name)], env=env | {"SLHMC_COUNTER": str(counter)})

    ref_counter, counter = tmp_path / "ref_calls.txt", tmp_path / "calls.txt"
    t0 = time.perf_counter()
    assert start("ref", ref_counter).wait(timeout=600) == 0
    wall = time.perf_counter() - t0
    at_kill, lost, done_before = [], [], []
    for kind, value in kills:
        proc = start("run", counter)
        t0 = time.perf_counter()
        while proc.poll() is None:
            if (kind == "calls" and _rows(tmp_path / "run" / "labels.sqlite") >= value) or \
                    (kind == "reference" and _rows(tmp_path / "run" / "reference" / "labels.sqlite") >= value) or \
                    (kind == "fraction" and time.perf_counter() - t0 > value * wall):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
        assert proc.wait(timeout=60) == -signal.SIGKILL, "the run finished before it was killed"
        done = counter.read_text().splitlines() if counter.exists() else []
        stored = _stored_fingerprints(tmp_path / "run" / "labels.sqlite") | \
            _stored_fingerprints(tmp_path / "run" / "reference" / "labels.sqlite")
        lost.append(sum(f not in stored for f in done[len(done_before):]))
        done_before = done
        at_kill.append(lines(counter))
    assert start("run", counter).wait(timeout=600) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    ref = json.loads((tmp_path / "ref" / "report.json").read_text())
    return lines(counter), lines(ref_counter), at_kill, lost, report, ref


def fingerprint(numbers, positions) -> str:
    """A configuration's identity as the label store keys it (positions rounded to 1e-8 A)."""
    import hashlib

    h = hashlib.sha256(np.asarray(numbers, np.int64).tobytes())
    h.update(np.round(np.asarray(positions, np.float64), 8).tobytes())
    return h.hexdigest()[:20]


def _stored_fingerprints(path) -> set:
    """Fingerprints of every configuration a label store holds (read-only; none for a missing file)."""
    import sqlite3

    if not path.exists():
        return set()
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {fingerprint(json.loads(z), json.loads(x)) for z, x in con.execute("SELECT numbers, positions FROM labels")}
    finally:
        con.close()


def test_killed_while_sampling_and_rerun_makes_as_many_target_calls_as_an_uninterrupted_run(tmp_path):
    """Done-when 2: SIGKILL at a random target call of the sampling and again in the reference run (in
    one of its extensions), rerun on the same directory: it completes, with the total number of target
    calls of an uninterrupted run, the same reference chains and the same end result; each of the two
    replicates of every arm is a valid trajectory of its own."""
    rng = np.random.default_rng(17)
    n_kill, n_ref = int(rng.integers(10, 90)), int(rng.integers(30, 80))  # the reference: 4 x (4 + 18) calls
    total, ref_total, at_kill, lost, report, ref = _kill_run(tmp_path, [("calls", n_kill), ("reference", n_ref)])
    # exactly the uninterrupted run's calls, plus each result a kill caught between its computation and its
    # commit (it never reached the store, so it must be computed again): no stored result is ever recomputed
    assert total == ref_total + sum(lost) and ref_total > at_kill[1] > at_kill[0] >= n_kill
    assert report["arms"] == ref["arms"]
    assert report["metadata"]["dft_calls"] == ref["metadata"]["dft_calls"]  # the same stored labels, none lost
    assert report["metadata"]["reference"] == ref["metadata"]["reference"]
    a, b = (np.load(tmp_path / d / "reference.npz") for d in ("run", "ref"))
    assert np.array_equal(a["positions"], b["positions"]) and np.array_equal(a["store_keys"], b["store_keys"])
    # min_ess = 1000 is out of reach: extended chunk by chunk to max_steps, and said
    assert report["metadata"]["reference"]["n_steps"] == 18 and report["metadata"]["reference"]["short_of_min_ess"]
    _check_replicates(tmp_path / "run", 2)


@pytest.mark.slow
def test_killed_twice_anywhere_and_rerun_gives_the_uninterrupted_result(tmp_path):
    """Kills in the sampling phase and at a random moment of the rest (labelling, fine-tuning,
    evaluation, report): the total target calls and the report equal an uninterrupted run's."""
    rng = np.random.default_rng(23)
    kills = [("calls", int(rng.integers(10, 90))), ("fraction", float(rng.uniform(0.3, 0.8)))]
    total, ref_total, at_kill, lost, report, ref = _kill_run(tmp_path, kills)
    assert total == ref_total + sum(lost) and ref_total >= at_kill[1] >= at_kill[0]
    assert report["arms"] == ref["arms"]
