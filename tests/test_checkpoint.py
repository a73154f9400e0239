"""A run SIGKILLed mid-way (during warm-up, or at an arbitrary instant of production) and resumed
from its checkpoint gives bit-identical samples to an uninterrupted run with the same seed."""

import importlib.util
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

RUN_SCRIPT = r'''
import os, signal, sys, time
import ase
import jax.numpy as jnp
import numpy as np
import slhmc_jax
from slhmc_jax.models.base import FunctionPotential

X0 = np.array([[0.0, 0.0, 0.0], [1.1, 0.0, 0.0], [0.0, 1.3, 0.0]])
PROPOSAL = FunctionPotential(lambda x, c, z: 2.0 * (jnp.linalg.norm(x[1] - x[0]) - 1.2) ** 2
                             + 1.5 * (jnp.linalg.norm(x[2] - x[0]) - 1.2) ** 2)


def make_target(kill_at_call=None, sleep_s=0.0):
    calls = {"n": 0}

    def target(atoms_list):
        calls["n"] += 1
        if kill_at_call is not None and calls["n"] == kill_at_call:
            os.kill(os.getpid(), signal.SIGKILL)  # a real, uncatchable kill in the middle of a step
        time.sleep(sleep_s)
        return [1.5 * (np.linalg.norm(a.positions[1] - a.positions[0]) - 1.1) ** 2
                + 1.0 * (np.linalg.norm(a.positions[2] - a.positions[0]) - 1.3) ** 2 for a in atoms_list]

    return target


def run(checkpoint=None, ensemble="nvt", kill_at_call=None, sleep_s=0.0):
    atoms = ase.Atoms("COH", positions=X0 + 2.0, cell=np.eye(3) * 6.0, pbc=ensemble != "nvt")
    kw = dict(pressure_GPa=1.0, max_log_cell_step=0.05) if ensemble != "nvt" else {}
    return slhmc_jax.sample(atoms, PROPOSAL, make_target(kill_at_call, sleep_s), temperature_K=500.0, n_chains=8,
                            n_steps=16, trajectory_steps=5, timestep_fs=1.0, seed=3, checkpoint=checkpoint,
                            warmup_steps=6, ensemble=ensemble, progress=False, **kw)


if __name__ == "__main__":
    ck, ensemble, kill_at, sleep_s = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    run(ck, ensemble, int(kill_at) if kill_at != "none" else None, sleep_s)
'''


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "ck_run.py"
    path.write_text(RUN_SCRIPT)
    spec = importlib.util.spec_from_file_location("ck_run", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return path, mod


def _spawn(path, ck, ensemble, kill_at="none", sleep_s=0.0):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.Popen([sys.executable, str(path), str(ck), ensemble, str(kill_at), str(sleep_s)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _n_recorded(ck):
    try:
        with open(ck, "rb") as f:
            return pickle.load(f)["n_recorded"]
    except (FileNotFoundError, EOFError, pickle.UnpicklingError):
        return -1


def _assert_identical(a, b):
    for name in ("positions", "cells", "target_energies", "acceptance_rate"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.diagnostics["timestep_fs"] == b.diagnostics["timestep_fs"]
    assert a.diagnostics["trajectory_steps"] == b.diagnostics["trajectory_steps"]
    assert np.array_equal(a.diagnostics["ml_energy_error_eV"], b.diagnostics["ml_energy_error_eV"])


def test_sigkill_during_warmup_then_resume_is_bit_identical(script, tmp_path):
    path, mod = script
    ck = tmp_path / "warm.ckpt"
    # call 1 is the start energy, calls 2..7 the six warm-up steps: die inside warm-up step 4
    proc = _spawn(path, ck, "nvt", kill_at=5)
    assert proc.wait(timeout=120) == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    with open(ck, "rb") as f:
        saved = pickle.load(f)
    assert saved["n_warmup"] == 3 and saved["n_recorded"] == 0
    resumed = mod.run(str(ck))
    ref = mod.run()
    _assert_identical(resumed, ref)
    assert 0 < ref.acceptance_rate.mean() < 1 and len(ref.diagnostics["warmup"]) == 6


def test_sigkill_at_any_instant_of_npt_production_then_resume_is_bit_identical(script, tmp_path):
    path, mod = script
    ck = tmp_path / "npt.ckpt"
    proc = _spawn(path, ck, "npt", sleep_s=0.05)
    deadline = time.time() + 120
    while _n_recorded(ck) < 7 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # wherever it is: proposing, in the target, or writing files
    assert proc.wait(timeout=30) == -signal.SIGKILL
    n_killed = _n_recorded(ck)
    assert 7 <= n_killed < 16
    size_at_kill = os.path.getsize(ck)
    resumed = mod.run(str(ck), "npt")
    ref = mod.run(None, "npt")
    _assert_identical(resumed, ref)
    assert np.any(ref.diagnostics["move"] == 1) and np.ptp(np.linalg.det(ref.cells)) > 0
    # O(1) checkpoint I/O per step: the state file does not grow with the steps, the records are
    # fixed-size appends
    assert abs(os.path.getsize(ck) - size_at_kill) < 256
    n_atoms, n_chains = 3, 8
    record_bytes = os.path.getsize(str(ck) + ".records") / 16
    assert record_bytes < 2 * 8 * n_chains * (n_atoms * 3 + 9 + 4) + 64


def test_resume_refuses_other_settings(script, tmp_path):
    _, mod = script
    ck = tmp_path / "x.ckpt"
    mod.run(str(ck))
    import slhmc_jax

    atoms = __import__("ase").Atoms("COH", positions=mod.X0 + 2.0, cell=np.eye(3) * 6.0)
    with pytest.raises(ValueError, match="other settings"):
        slhmc_jax.sample(atoms, mod.PROPOSAL, mod.make_target(), temperature_K=400.0, n_chains=8, n_steps=16,
                         trajectory_steps=5, timestep_fs=1.0, seed=3, checkpoint=str(ck), warmup_steps=6, progress=False)
