"""DispatchedTarget: Dask LocalCluster and the default local process pool, with a worker killed mid-batch.

References are direct serial PySCF runs in the test process.
"""

import os
import signal
import time

import numpy as np
import pytest
from ase import Atoms
from ase.units import Hartree

from slhmc_jax.targets.dispatch import DispatchedTarget, dask_executor
from slhmc_jax.targets import PySCFTarget, TargetEvaluationError

# H2O / def2-SVP / PBE / grid level 2: ~0.3-0.5 s per SCF, long enough for a kill to land mid-batch.
BASIS, GRID, CONV = "def2-svp", 2, 1e-10


def _h2o_batch(n, seed):
    rng = np.random.default_rng(seed)
    base = np.array([[0, 0, 0.119262], [0, 0.763239, -0.477047], [0, -0.763239, -0.477047]])
    return [Atoms("OHH", positions=base + rng.normal(scale=0.03, size=base.shape)) for _ in range(n)]


def _direct_energy_Ha(atoms):
    from pyscf import dft, gto

    mol = gto.M(atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
                basis=BASIS, unit="Angstrom", verbose=0)
    mf = dft.RKS(mol)
    mf.xc, mf.grids.level, mf.conv_tol = "PBE", GRID, CONV
    e = mf.kernel()
    assert mf.converged
    return e


def _target():
    return PySCFTarget("pbe", basis=BASIS, grids_level=GRID, conv_tol=CONV, device="cpu")


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_dask_local_cluster_two_workers_survives_killed_worker(monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the worker processes
    batch = _h2o_batch(16, seed=0)
    client = dask_executor(None, n_workers=2, threads_per_worker=1)
    try:
        pids = client.run(os.getpid)
        assert len(pids) == 2 and os.getpid() not in pids.values()  # real worker processes
        dt = DispatchedTarget(_target(), executor=client)
        out = {}
        stream = dt.evaluate_streaming(batch)
        j, r = next(stream)
        out[j] = r
        busy = client.processing()
        victim = max(pids, key=lambda w: len(busy.get(w, ())))
        assert len(busy.get(victim, ())) > 0  # the killed worker holds unfinished tasks
        os.kill(pids[victim], signal.SIGKILL)
        n_at_kill = len(out)
        for j, r in stream:
            out[j] = r
        assert n_at_kill < 16
        assert sorted(out) == list(range(16))
        assert not _alive(pids[victim])
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    for j, a in enumerate(batch):
        assert abs(out[j].energy_eV / Hartree - _direct_energy_Ha(a)) < 1e-8, j


def test_local_process_pool_default_survives_killed_worker(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    batch = _h2o_batch(8, seed=1)
    with DispatchedTarget(_target(), max_workers=2) as dt:  # default executor: local process pool
        stream = dt.evaluate_streaming(batch)
        out = dict([next(stream)])
        worker_pids = list(dt.executor._processes)  # noqa: SLF001 (test reaches into the pool)
        assert len(worker_pids) >= 1 and os.getpid() not in worker_pids
        os.kill(worker_pids[0], signal.SIGKILL)
        for j, r in stream:
            out[j] = r
        assert dt.resubmitted >= 1  # the broken pool was replaced and lost tasks resubmitted
        assert sorted(out) == list(range(8))
        # the next batch of the same chains is warm-started from the densities that came back
        nxt = [a.copy() for a in batch[:2]]
        for a in nxt:
            a.positions += 0.01
        res2 = dt.evaluate(nxt)
        assert all(r.info["warm_start"] for r in res2)
    for j, a in enumerate(batch):
        assert abs(out[j].energy_eV / Hartree - _direct_energy_Ha(a)) < 1e-8, j
    for r, a in zip(res2, nxt):
        assert abs(r.energy_eV / Hartree - _direct_energy_Ha(a)) < 1e-8


def test_failed_evaluation_in_worker_names_its_index():
    batch = _h2o_batch(3, seed=2)
    bad = PySCFTarget("pbe", basis="sto-3g", grids_level=1, conv_tol=1e-14, max_cycle=1, device="cpu")
    with DispatchedTarget(bad, max_workers=1) as dt:
        with pytest.raises(TargetEvaluationError) as info:
            dt.evaluate(batch[:1])
    assert info.value.index == 0
    assert info.value.settings["max_cycle"] == 1
