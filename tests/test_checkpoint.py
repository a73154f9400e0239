"""A run SIGKILLed mid-way (during warm-up, or at an arbitrary instant of production) and resumed
from its checkpoint gives bit-identical samples to an uninterrupted run with the same seed."""

import importlib.util
import json
import os
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


def screen(atoms_list):  # a deliberately wrong cheap energy for delayed acceptance
    return [1.2 * (np.linalg.norm(a.positions[1] - a.positions[0]) - 1.15) ** 2
            + 1.0 * (np.linalg.norm(a.positions[2] - a.positions[0]) - 1.3) ** 2 for a in atoms_list]


def run(checkpoint=None, ensemble="nvt", kill_at_call=None, sleep_s=0.0, screened=False, n_steps=16):
    atoms = ase.Atoms("COH", positions=X0 + 2.0, cell=np.eye(3) * 6.0, pbc=ensemble != "nvt")
    kw = dict(pressure_GPa=1.0, max_log_cell_step=0.05) if ensemble != "nvt" else {}
    return slhmc_jax.sample(atoms, PROPOSAL, make_target(kill_at_call, sleep_s), temperature_K=500.0, n_chains=8,
                            n_steps=n_steps, trajectory_steps=5, timestep_fs=1.0, seed=3, checkpoint=checkpoint,
                            warmup_steps=6, ensemble=ensemble, progress=False, screen=screen if screened else None, **kw)


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


def _env():
    """The child process imports this checkout's slhmc_jax (whatever is installed)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))


def _spawn(path, ck, ensemble, kill_at="none", sleep_s=0.0):
    env = _env()
    return subprocess.Popen([sys.executable, str(path), str(ck), ensemble, str(kill_at), str(sleep_s)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _n_recorded(ck):
    from slhmc_jax.sampler.checkpoint import read_state

    try:
        return read_state(ck).n_recorded
    except (FileNotFoundError, ValueError):
        return -1


def _assert_identical(a, b):
    for name in ("positions", "cells", "target_energies", "acceptance_rate"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.diagnostics.timestep_fs == b.diagnostics.timestep_fs
    assert a.diagnostics.trajectory_steps == b.diagnostics.trajectory_steps
    assert np.array_equal(a.diagnostics.ml_energy_error_eV, b.diagnostics.ml_energy_error_eV)


def test_sigkill_during_warmup_then_resume_is_bit_identical(script, tmp_path):
    path, mod = script
    ck = tmp_path / "warm.ckpt"
    # call 1 is the start energy, calls 2..7 the six warm-up steps: die inside warm-up step 4
    proc = _spawn(path, ck, "nvt", kill_at=5)
    assert proc.wait(timeout=120) == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    from slhmc_jax.sampler.checkpoint import read_state

    saved = read_state(ck)
    assert saved.n_warmup == 3 and saved.n_recorded == 0
    resumed = mod.run(str(ck))
    ref = mod.run()
    _assert_identical(resumed, ref)
    assert 0 < ref.acceptance_rate.mean() < 1 and len(ref.diagnostics.warmup) == 6


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
    assert np.any(ref.diagnostics.move == 1) and np.ptp(np.linalg.det(ref.cells)) > 0
    # O(1) checkpoint I/O per step: the state file does not grow with the steps, the records are
    # fixed-size appends
    assert abs(os.path.getsize(ck) - size_at_kill) < 256
    n_atoms, n_chains = 3, 8
    record_bytes = os.path.getsize(str(ck) + ".records") / 16
    assert record_bytes < 2 * 8 * n_chains * (n_atoms * 3 + 9 + 4) + 64


def test_screened_npt_run_extended_from_its_checkpoint_is_bit_identical(script, tmp_path):
    """Delayed acceptance (HMC and cell moves screened): 8 steps, then resumed to 16 from the
    checkpoint (screen energies and stage keys restored), equals 16 steps in one go."""
    _, mod = script
    ck = str(tmp_path / "screened.ckpt")
    mod.run(ck, "npt", screened=True, n_steps=8)
    resumed = mod.run(ck, "npt", screened=True)
    ref = mod.run(None, "npt", screened=True)
    _assert_identical(resumed, ref)
    d, r = resumed.diagnostics, ref.diagnostics
    assert d.n_screen_rejected == r.n_screen_rejected > 0 and d.n_stage_two == r.n_stage_two
    assert d.n_target_calls == r.n_target_calls and d.n_screen_calls == r.n_screen_calls
    with pytest.raises(ValueError, match="another delayed-acceptance screen"):
        mod.run(ck, "npt", screened=False)


def test_resume_refuses_other_settings(script, tmp_path):
    _, mod = script
    ck = tmp_path / "x.ckpt"
    mod.run(str(ck))
    import slhmc_jax

    atoms = __import__("ase").Atoms("COH", positions=mod.X0 + 2.0, cell=np.eye(3) * 6.0)
    with pytest.raises(ValueError, match="other settings"):
        slhmc_jax.sample(atoms, mod.PROPOSAL, mod.make_target(), temperature_K=400.0, n_chains=8, n_steps=16,
                         trajectory_steps=5, timestep_fs=1.0, seed=3, checkpoint=str(ck), warmup_steps=6, progress=False)


# ---- a PySCF run with a label store and forces, SIGKILLed at a random moment and resumed

PYSCF_SCRIPT = r'''
import os, sys
import ase
import jax.numpy as jnp
import numpy as np
import slhmc_jax
from slhmc_jax.models.base import FunctionPotential
from slhmc_jax.targets import PySCFTarget

R0, K_R, THETA0, K_THETA = 1.02, 45.0, np.deg2rad(97.0), 4.0  # harmonic valence model near PBE/STO-3G


def water_model(x, cell, z):
    d1, d2 = x[1] - x[0], x[2] - x[0]
    r1, r2 = jnp.linalg.norm(d1), jnp.linalg.norm(d2)
    theta = jnp.arccos(jnp.clip(jnp.dot(d1, d2) / (r1 * r2), -1 + 1e-12, 1 - 1e-12))
    return 0.5 * K_R * ((r1 - R0) ** 2 + (r2 - R0) ** 2) + 0.5 * K_THETA * (theta - THETA0) ** 2


class Counted(PySCFTarget):
    """Appends one line to a counter file (fsynced) before every PySCF evaluation."""

    counter = None

    def evaluate_one(self, atoms, dm0=None):
        with open(self.counter, "a") as fh:
            fh.write("call\n"); fh.flush(); os.fsync(fh.fileno())
        return super().evaluate_one(atoms, dm0)


def run(checkpoint, store, counter):
    Counted.counter = counter
    atoms = ase.Atoms("OHH", positions=[[0, 0, 0.119262], [0, 0.763239, -0.477047], [0, -0.763239, -0.477047]])
    target = Counted("pbe", basis="sto-3g", grids_level=0, conv_tol=1e-8)
    return slhmc_jax.sample(atoms, FunctionPotential(water_model), target, temperature_K=300.0, n_chains=4, n_steps=10,
                            trajectory_steps=6, timestep_fs=0.4, seed=11, checkpoint=checkpoint, store=store,
                            labels="forces", progress=False)


if __name__ == "__main__":
    res = run(*sys.argv[1:4])
    np.savez(sys.argv[4], positions=res.positions, energies=res.target_energies, accepted=res.accepted,
             keys=res.store_keys, n_target_calls=res.diagnostics.n_target_calls, n_judged=res.diagnostics.n_judged)
'''


def _lines(path):
    return len(open(path).read().splitlines()) if os.path.exists(path) else 0


def test_pyscf_store_forces_sigkill_resume_repeats_no_dft_call(tmp_path):
    """Issue 11 #3: every distinct evaluated configuration has one store row with energy and forces;
    a SIGKILL at a random moment, then a resume, makes exactly as many new PySCF calls as results
    were missing, and gives the same chain as an uninterrupted run."""
    from test_store import _rows  # the store's row count, read-only while another process writes it

    from slhmc_jax.targets.store import LabelStore

    script = tmp_path / "pyscf_run.py"
    script.write_text(PYSCF_SCRIPT)
    env = dict(_env(), OMP_NUM_THREADS="1")
    ck, db, counter, out = (tmp_path / n for n in ("run.ckpt", "labels.sqlite", "calls.txt", "killed.npz"))
    cmd = [sys.executable, str(script), str(ck), str(db), str(counter), str(out)]
    kill_after = int(np.random.default_rng(2026).integers(6, 30))  # PySCF calls started before the kill
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while _lines(counter) < kill_after:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "run too slow"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    rows_at_kill, calls_at_kill = _rows(db), _lines(counter)
    assert 0 < rows_at_kill <= calls_at_kill and not out.exists()

    subprocess.run(cmd, env=env, check=True, timeout=300)
    resumed = np.load(out)
    new_calls = _lines(counter) - calls_at_kill
    rows = _rows(db)
    assert new_calls == rows - rows_at_kill  # every missing result, and nothing else, was computed
    assert int(resumed["n_judged"]) == rows == int(resumed["n_target_calls"])  # one row per distinct configuration
    store = LabelStore(db)
    for numbers, pos, cell, pbc, e, f, s in store.rows():  # each with energy and forces
        assert np.isfinite(e) and np.asarray(json.loads(f)).shape == (3, 3)

    ref_out = tmp_path / "ref.npz"
    subprocess.run([sys.executable, str(script), str(tmp_path / "ref.ckpt"), str(tmp_path / "ref.sqlite"),
                    str(tmp_path / "ref_calls.txt"), str(ref_out)], env=env, check=True, timeout=300)
    ref = np.load(ref_out)
    assert _lines(tmp_path / "ref_calls.txt") == rows  # the uninterrupted run made as many calls in all
    np.testing.assert_array_equal(resumed["positions"], ref["positions"])
    np.testing.assert_array_equal(resumed["accepted"], ref["accepted"])
    np.testing.assert_array_equal(resumed["keys"], ref["keys"])
    # energies: the same SCF solutions (a resumed process restarts its warm starts cold)
    np.testing.assert_allclose(resumed["energies"], ref["energies"], rtol=0, atol=1e-6)
    assert 0.2 < ref["accepted"].mean() < 1
