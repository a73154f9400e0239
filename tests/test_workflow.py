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
    assert (path / "models" / "slhmc_2.params.pkl").exists() and (path / "models" / "relabel.params.pkl").exists()
    rows = len(LabelStore(path / "labels.sqlite"))
    assert report["metadata"]["dft_calls"]["store_rows"] == rows
    # the same command on the finished directory does nothing new and gives the same report
    again = json.loads(workflow.run(toy_config(), path, foundation=foundation(), progress=False).read_text())
    assert again["arms"] == report["arms"] and len(LabelStore(path / "labels.sqlite")) == rows
    with pytest.raises(cfg.ConfigError, match="another config"):
        workflow.run(toy_config(run={"iterations": 3}), path, foundation=foundation(), progress=False)


KILL_SCRIPT = r"""
import os, sys
sys.path.insert(0, os.environ["SLHMC_TESTS"])
from ase.calculators.morse import MorsePotential
from test_workflow import MORSE, foundation, toy_config
from slhmc_jax.app import workflow


class Counted(MorsePotential):
    # one line per completed target evaluation, fsynced (the store commits right after)
    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        with open(os.environ["SLHMC_COUNTER"], "a") as fh:
            fh.write("call\n"); fh.flush(); os.fsync(fh.fileno())


config = toy_config(run={"iterations": 2}, sampler={"n_chains": 4, "n_steps": 6, "warmup_steps": 2, "burn_in_steps": 2},
                    relabel={"n_chains": 4, "warmup_steps": 2, "burn_in_steps": 2},
                    evaluation={"n_chains": 4, "n_steps": 12, "warmup_steps": 2, "burn_in_steps": 2, "n_bootstrap": 50},
                    finetune={"epochs": 4, "batch_size": 8})
workflow.run(config, sys.argv[1], foundation=foundation(), target=Counted(**MORSE), progress=False)
"""


def _kill_run(tmp_path, kills):
    """Run the cheap workflow in a subprocess killed (SIGKILL) at each of ``kills`` (("calls", n): once
    the label store holds n results, so the kill lands in the next target call; ("fraction", f): at
    f x the uninterrupted run's wall time), then rerun to completion. Returns (total completed target
    calls, the uninterrupted run's, calls at each kill, resumed report, uninterrupted report).

    A call in flight at the kill has not completed and is not counted: its result never existed
    outside the killed process. Every completed result is committed to the store right after."""
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
    at_kill = []
    for kind, value in kills:
        proc = start("run", counter)
        t0 = time.perf_counter()
        while proc.poll() is None:
            if (kind == "calls" and _rows(tmp_path / "run" / "labels.sqlite") >= value) or \
                    (kind == "fraction" and time.perf_counter() - t0 > value * wall):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
        assert proc.wait(timeout=60) == -signal.SIGKILL, "the run finished before it was killed"
        at_kill.append(lines(counter))
    assert start("run", counter).wait(timeout=600) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    ref = json.loads((tmp_path / "ref" / "report.json").read_text())
    return lines(counter), lines(ref_counter), at_kill, report, ref


def test_killed_while_sampling_and_rerun_makes_as_many_target_calls_as_an_uninterrupted_run(tmp_path):
    """Done-when 2: SIGKILL at a random target call, rerun on the same directory: it completes, with the
    total number of target calls of an uninterrupted run, and the same end result."""
    n_kill = int(np.random.default_rng(17).integers(10, 90))
    total, ref_total, at_kill, report, ref = _kill_run(tmp_path, [("calls", n_kill)])
    assert total == ref_total > at_kill[0] >= n_kill
    assert report["arms"] == ref["arms"]


@pytest.mark.slow
def test_killed_twice_anywhere_and_rerun_gives_the_uninterrupted_result(tmp_path):
    """Kills in the sampling phase and at a random moment of the rest (labelling, fine-tuning,
    evaluation, report): the total target calls and the report equal an uninterrupted run's."""
    rng = np.random.default_rng(23)
    kills = [("calls", int(rng.integers(10, 90))), ("fraction", float(rng.uniform(0.3, 0.8)))]
    total, ref_total, at_kill, report, ref = _kill_run(tmp_path, kills)
    assert total == ref_total >= at_kill[1] >= at_kill[0]
    assert report["arms"] == ref["arms"]
