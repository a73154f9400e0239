"""Evaluate one batch of configurations on a ``concurrent.futures.Executor``.

``DispatchedTarget(target, executor)`` is itself a Target. Each configuration is one task
``target.evaluate_one(atoms, dm0)``; the warm-start density matrix travels with the task and the
converged one comes back with the result, so warm starts survive process boundaries. Executors:
a local ``ProcessPoolExecutor`` (default), or Dask (``dask_executor(address or None)`` returns a
``distributed.Client`` executor; None starts a LocalCluster). A task lost with a dead worker is
resubmitted (Dask also reschedules it itself), so a batch returns every result or raises.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import os
from typing import Any, Sequence

import numpy as np


def gpu_available() -> bool:
    """True when gpu4pyscf imports and a CUDA device is visible (gpu4pyscf is then used by PySCFTarget users)."""
    try:
        import cupy  # noqa: F401
        import gpu4pyscf  # noqa: F401

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _run_task(target, atoms, dm0, threads):
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        try:
            from pyscf import lib

            lib.num_threads(threads)
        except ImportError:
            pass
    return target.evaluate_one(atoms, dm0)


def dask_executor(address: str | None = None, n_workers: int = 2, threads_per_worker: int = 1):
    """A ``distributed.Client`` (a concurrent.futures-compatible executor via ``get_executor``)."""
    from distributed import Client, LocalCluster

    if address is None:
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True)
        client = Client(cluster)
    else:
        client = Client(address)
    return client


class DispatchedTarget:
    """Target that farms out each configuration of a batch to an executor.

    Args:
        target: a target with ``evaluate_one(atoms, dm0) -> (TargetResult, dm)`` (PySCFTarget, ASETarget).
        executor: a concurrent.futures.Executor or a distributed.Client; default: ProcessPoolExecutor(max_workers).
        threads_per_task: OMP / pyscf threads in each task.
        max_resubmits: how many times a task lost with its worker is resubmitted.
    """

    def __init__(self, target, executor=None, max_workers: int | None = None, threads_per_task: int | None = 1,
                 max_resubmits: int = 3):
        self.target = copy.copy(target)
        if hasattr(self.target, "_dm"):
            self.target._dm = {}  # state lives here, not in the shipped target
        self._own = executor is None
        self._max_workers = max_workers
        self.executor = executor if executor is not None else cf.ProcessPoolExecutor(max_workers)
        self.threads_per_task = threads_per_task
        self.max_resubmits = max_resubmits
        self._dm: dict[int, tuple[Any, Any]] = {}

    def settings(self) -> dict:
        return self.target.settings()

    def _submit(self, atoms, dm0):
        return self.executor.submit(_run_task, self.target, atoms, dm0, self.threads_per_task)

    def evaluate_streaming(self, atoms_list: Sequence[Any], slots: Sequence[int] | None = None):
        """Yield (j, TargetResult) in completion order."""
        slots = list(range(len(atoms_list))) if slots is None else list(slots)
        keys = [tuple(a.get_atomic_numbers()) for a in atoms_list]
        dm0s = []
        for k, key in zip(slots, keys):
            prev = self._dm.get(k, (None, None))
            dm0s.append(prev[1] if prev[0] == key else None)
        futs = {self._submit(a, d): j for j, (a, d) in enumerate(zip(atoms_list, dm0s))}
        tries = [0] * len(atoms_list)
        while futs:
            done = next(iter(_as_completed(self.executor, list(futs))))
            j = futs.pop(done)
            try:
                res, dm = done.result()
            except (cf.process.BrokenProcessPool if hasattr(cf, "process") else RuntimeError) as err:
                tries[j] += 1
                if tries[j] > self.max_resubmits or not self._own:
                    raise
                self._restart_pool(futs, atoms_list, dm0s, err)
                futs[self._submit(atoms_list[j], dm0s[j])] = j
                continue
            except Exception as err:
                if type(err).__name__ in ("KilledWorker", "CommClosedError") and tries[j] < self.max_resubmits:
                    tries[j] += 1
                    futs[self._submit(atoms_list[j], dm0s[j])] = j
                    continue
                raise
            self._dm[slots[j]] = (keys[j], dm)
            yield j, res

    def _restart_pool(self, futs, atoms_list, dm0s, err):
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor = cf.ProcessPoolExecutor(self._max_workers)
        for f, j in list(futs.items()):
            del futs[f]
            futs[self._submit(atoms_list[j], dm0s[j])] = j

    def evaluate(self, atoms_list: Sequence[Any]):
        out = [None] * len(atoms_list)
        for j, r in self.evaluate_streaming(atoms_list):
            out[j] = r
        return out

    def __call__(self, atoms_list: Sequence[Any]) -> np.ndarray:
        return np.array([r.energy_eV for r in self.evaluate(atoms_list)], dtype=np.float64)

    def close(self):
        if self._own:
            self.executor.shutdown()


def _as_completed(executor, futures):
    if type(executor).__name__ == "Client":
        from distributed import as_completed

        return as_completed(futures)
    return cf.as_completed(futures)
