"""LabelStore / CachedTarget: crash safety (SIGKILL mid-batch), repeated queries, extxyz export.

Every PySCF reference here is a direct PySCF run in the test process (independent of the store).
"""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from ase import Atoms
from ase.units import Hartree

from slhmc_jax.targets.store import LabelStore, cached
from slhmc_jax.targets import ASETarget, PySCFTarget

N_BATCH = 8
# Unit-test DFT setting (fast): H2O, STO-3G, PBE, grid level 1, tight SCF.
SETTINGS = dict(basis="sto-3g", grids_level=1, conv_tol=1e-10)


def _h2o_batch(n=N_BATCH, seed=0, scale=0.03):
    rng = np.random.default_rng(seed)
    base = np.array([[0, 0, 0.119262], [0, 0.763239, -0.477047], [0, -0.763239, -0.477047]])
    return [Atoms("OHH", positions=base + rng.normal(scale=scale, size=base.shape)) for _ in range(n)]


def _direct_pyscf_energy_Ha(atoms):
    from pyscf import dft, gto

    mol = gto.M(atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
                basis="sto-3g", unit="Angstrom", verbose=0)
    mf = dft.RKS(mol)
    mf.xc = "PBE"
    mf.grids.level = 1
    mf.conv_tol = 1e-10
    return mf.kernel()


class CountingPySCF(PySCFTarget):
    """PySCFTarget that counts its PySCF evaluations (test instrumentation only)."""

    calls = 0

    def evaluate_one(self, atoms, dm0=None):
        CountingPySCF.calls += 1
        return super().evaluate_one(atoms, dm0)


# The driver: evaluates the batch through the store; each PySCF call appends one line to a
# counter file (flushed + fsynced before the call starts) and sleeps a little after it, so that
# the parent has a window to SIGKILL it while the batch is half done.
DRIVER = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    from ase import Atoms
    from slhmc_jax.targets.store import cached
    from slhmc_jax.targets import PySCFTarget

    db, counter, out = sys.argv[1], sys.argv[2], sys.argv[3]
    rng = np.random.default_rng(0)
    base = np.array([[0, 0, 0.119262], [0, 0.763239, -0.477047], [0, -0.763239, -0.477047]])
    batch = [Atoms("OHH", positions=base + rng.normal(scale=0.03, size=base.shape)) for _ in range({n})]

    class Logged(PySCFTarget):
        def evaluate_one(self, atoms, dm0=None):
            with open(counter, "a") as fh:
                fh.write("call\\n"); fh.flush(); os.fsync(fh.fileno())
            r = super().evaluate_one(atoms, dm0)
            time.sleep(0.4)
            return r

    t = cached(Logged("pbe", **{settings!r}), db)
    e = t(batch)
    np.save(out, e)
""").format(n=N_BATCH, settings=SETTINGS)


def _rows(db):
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return con.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:  # not created yet
        return 0


def _n_calls(counter):
    return len(open(counter).read().splitlines()) if os.path.exists(counter) else 0


def test_sigkill_mid_batch_then_restart_evaluates_only_missing(tmp_path):
    db, counter, out = tmp_path / "labels.sqlite", tmp_path / "calls.txt", tmp_path / "e.npy"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(script), str(db), str(counter), str(out)]

    proc = subprocess.Popen(cmd, env=env)
    deadline = time.time() + 60
    while _rows(db) < 3:
        assert proc.poll() is None, "driver exited before it was killed"
        assert time.time() < deadline, "driver too slow"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    committed = _rows(db)
    calls_before = _n_calls(counter)
    assert 3 <= committed < N_BATCH, committed  # really killed mid-batch
    assert not out.exists()

    stored = LabelStore(db)
    settings = PySCFTarget("pbe", **SETTINGS).settings()
    batch = _h2o_batch()
    done_before = {i: stored.get(a, settings) for i, a in enumerate(batch)}
    done_before = {i: r.energy_eV for i, r in done_before.items() if r is not None}
    assert len(done_before) == committed

    subprocess.run(cmd, env=env, check=True, timeout=120)
    new_calls = _n_calls(counter) - calls_before
    assert new_calls == N_BATCH - committed, (new_calls, committed)
    assert _rows(db) == N_BATCH

    e = np.load(out)
    for i, e_i in done_before.items():  # completed results were read back, bit for bit
        assert e[i] == e_i
    for i, a in enumerate(batch):  # and every result is the direct PySCF energy
        assert abs(e[i] / Hartree - _direct_pyscf_energy_Ha(a)) < 1e-8


def test_repeated_query_is_answered_from_store(tmp_path):
    CountingPySCF.calls = 0
    t = cached(CountingPySCF("pbe", **SETTINGS), tmp_path / "s.sqlite")
    batch = _h2o_batch(3, seed=1)
    e1 = t(batch)
    assert CountingPySCF.calls == 3
    e2 = t([batch[1], batch[0], batch[2]])
    assert CountingPySCF.calls == 3
    np.testing.assert_array_equal(e2, e1[[1, 0, 2]])
    # a new configuration in the batch costs exactly one call; other settings are other keys
    e3 = t(batch[:2] + _h2o_batch(1, seed=2))
    assert CountingPySCF.calls == 4
    np.testing.assert_array_equal(e3[:2], e1[:2])
    t_other = cached(CountingPySCF("pbe", basis="sto-3g", grids_level=2, conv_tol=1e-10), t.store)
    t_other(batch[:1])
    assert CountingPySCF.calls == 5
    # a fresh process view of the same file answers from disk too
    t2 = cached(CountingPySCF("pbe", **SETTINGS), LabelStore(tmp_path / "s.sqlite"))
    np.testing.assert_array_equal(t2(batch), e1)
    assert CountingPySCF.calls == 5
    assert abs(e1[0] / Hartree - _direct_pyscf_energy_Ha(batch[0])) < 1e-8


def test_export_extxyz_mace_keys_round_trip(tmp_path):
    import ase.io
    from ase.build import bulk
    from ase.calculators.emt import EMT

    store = LabelStore(tmp_path / "s.sqlite")
    mol_t = cached(PySCFTarget("pbe", compute_forces=True, **SETTINGS), store)
    mols = _h2o_batch(2, seed=3)
    r_mol = mol_t.evaluate(mols)
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    cu.rattle(0.05, seed=2)
    r_cu = cached(ASETarget(EMT(), compute_stress=True), store).evaluate([cu])[0]

    n = store.export_extxyz(tmp_path / "train.xyz")
    assert n == 3
    frames = ase.io.read(tmp_path / "train.xyz", index=":")
    # mace-torch's default keys (mace/tools/default_keys.py DefaultKeys, mace-torch 0.3.16)
    keys = {"energy": "REF_energy", "forces": "REF_forces", "stress": "REF_stress"}
    for a, src, r in zip(frames, mols + [cu], r_mol + [r_cu]):
        assert a.info[keys["energy"]] == r.energy_eV  # exact: extxyz writes info floats with repr
        np.testing.assert_allclose(a.arrays[keys["forces"]], r.forces_eV_A, rtol=0, atol=1e-8)  # %16.8f
        np.testing.assert_allclose(a.positions, src.positions, rtol=0, atol=1e-8)
        assert list(a.numbers) == list(src.numbers)
        assert bool(a.pbc.all()) == bool(src.pbc.all())
    np.testing.assert_array_equal(frames[2].info[keys["stress"]], r_cu.stress_eV_A3)
    assert keys["stress"] not in frames[0].info  # molecules carry no stress
    # forces in the file are the PySCF forces of an independent direct gradient run
    from pyscf import dft, gto

    a0 = mols[0]
    mol = gto.M(atom=[(s, tuple(p)) for s, p in zip(a0.get_chemical_symbols(), a0.positions)], basis="sto-3g",
                unit="Angstrom", verbose=0)
    mf = dft.RKS(mol)
    mf.xc, mf.grids.level, mf.conv_tol = "PBE", 1, 1e-10
    mf.kernel()
    g = mf.nuc_grad_method()
    g.grid_response = True
    from ase.units import Bohr

    np.testing.assert_allclose(frames[0].arrays["REF_forces"], -g.kernel() * Hartree / Bohr, atol=1e-6)


def test_mace_torch_default_keys_match_export():
    mace_keys = pytest.importorskip("mace.tools.default_keys")
    assert mace_keys.DefaultKeys.ENERGY.value == "REF_energy"
    assert mace_keys.DefaultKeys.FORCES.value == "REF_forces"
    assert mace_keys.DefaultKeys.STRESS.value == "REF_stress"


def test_cached_result_without_forces_is_recomputed_when_forces_are_asked(tmp_path):
    CountingPySCF.calls = 0
    store = LabelStore(tmp_path / "s.sqlite")
    batch = _h2o_batch(2, seed=4)
    e_only = cached(CountingPySCF("pbe", **SETTINGS), store)
    e_only(batch)
    assert CountingPySCF.calls == 2
    with_f = cached(CountingPySCF("pbe", compute_forces=True, **SETTINGS), store)
    r = with_f.evaluate(batch)  # the stored rows carry no forces: both are evaluated again
    assert CountingPySCF.calls == 4 and all(x.forces_eV_A is not None for x in r)
    r2 = with_f.evaluate(batch)  # now the rows have gained forces
    assert CountingPySCF.calls == 4
    for a, b in zip(r, r2):
        np.testing.assert_array_equal(a.forces_eV_A, b.forces_eV_A)
    assert len(store) == 2  # append-only: same keys, no duplicate rows
