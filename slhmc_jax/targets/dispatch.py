"""Evaluate one batch of configurations on a ``concurrent.futures.Executor``.

``DispatchedTarget(target, executor)`` is itself a Target. Each configuration is one task
``target.evaluate_one(atoms, warm)`` (the warm-start protocol of :mod:`slhmc_jax.targets.base`):
the chain's warm-start state travels with the task and the state it leaves comes back with the
result, kept here per chain (:class:`~slhmc_jax.targets.WarmStarts`), so warm starts survive
process boundaries and never depend on which worker ran which chain.

Executors:
- default: a local ``ProcessPoolExecutor`` (spawned processes, so that a parent holding JAX
  threads is never forked), owned by the DispatchedTarget;
- Dask: ``dask_executor(address)`` returns a ``distributed.Client`` (``address=None`` starts a
  LocalCluster of worker processes); any other ``Client`` works too.

Fault tolerance: a batch returns every result or raises.
- Local pool: a worker that dies breaks the whole ``ProcessPoolExecutor``; the pool is replaced
  and every task without a result is resubmitted (results already received are kept).
- Dask: the scheduler reschedules the tasks of a dead worker by itself; a task that still fails
  with ``KilledWorker`` / a lost connection / cancellation is resubmitted under a new key.
A ``TargetEvaluationError`` (e.g. a non-converged SCF) is never resubmitted: it is re-raised
with ``index`` set to the position of the configuration in the batch.

GPUs: the shipped target resolves its backend on the worker (``PySCFTarget(device="auto")``
uses gpu4pyscf there when cupy/gpu4pyscf import and a CUDA device is visible).
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import multiprocessing
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Sequence

from slhmc_jax.targets.base import TargetEvaluationError, WarmStarts, capabilities, default_chains
from slhmc_jax.targets.pyscf_target import gpu_available
from slhmc_jax.targets.stack import TargetWrapper

__all__ = ["DispatchedTarget", "dask_executor", "gpu_available"]

_LOST_TASK_ERRORS = ("KilledWorker", "CommClosedError", "CancelledError", "FutureCancelledError")


def _run_task(target, atoms, warm, threads):
    """Worker side: set the thread count, evaluate one configuration -> (TargetResult, warm state)."""
    if threads:
        try:
            from pyscf import lib

            lib.num_threads(threads)
        except ImportError:
            pass
    return target.evaluate_one(atoms, warm)


def dask_executor(address: str | None = None, n_workers: int = 2, threads_per_worker: int = 1):
    """A ``distributed.Client`` on ``address`` (scheduler address), or on a new LocalCluster of
    ``n_workers`` worker processes with ``threads_per_worker`` threads each when address is None."""
    from distributed import Client, LocalCluster

    if address is None:
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                               dashboard_address=None)
        return Client(cluster)
    return Client(address)


def _is_dask(executor) -> bool:
    return type(executor).__module__.startswith("distributed")


class DispatchedTarget(TargetWrapper):
    """Target that farms out each configuration of a batch to an executor.

    Args:
        target: a target with ``evaluate_one(atoms, warm) -> (TargetResult, warm state)``
            (PySCFTarget, ASETarget) and ``settings()``.
        executor: a concurrent.futures.Executor or a distributed.Client; default: a
            ProcessPoolExecutor(max_workers) owned (and restarted on a crash) by this object.
        max_workers: size of the default pool (None: os.cpu_count()).
        threads_per_task: OpenMP / PySCF threads in each task (None: leave the worker's default).
        max_resubmits: how many times one task lost with its worker is resubmitted.

    Attributes:
        resubmitted: total number of tasks resubmitted after a lost worker (diagnostic).
    """

    def __init__(self, target, executor=None, max_workers: int | None = None, threads_per_task: int | None = 1,
                 max_resubmits: int = 3):
        super().__init__(target)
        if not capabilities(self.target).single_evaluations:
            raise TypeError(f"DispatchedTarget needs a target with evaluate_one(atoms, warm) (PySCFTarget, ASETarget); "
                            f"got {type(self.target).__name__}")
        self._own = executor is None
        self._max_workers = max_workers
        self.executor = executor if executor is not None else self._new_pool()
        self.threads_per_task = threads_per_task
        self.max_resubmits = max_resubmits
        self.resubmitted = 0
        self.warm_starts = WarmStarts()

    def _new_pool(self):
        return cf.ProcessPoolExecutor(self._max_workers, mp_context=multiprocessing.get_context("spawn"))

    @property
    def warm_start(self) -> bool:
        """Whether tasks carry their chain's warm-start state (the inner target's ``warm_starts`` capability)."""
        return capabilities(self.target).warm_starts

    def rewrap(self, inner) -> "DispatchedTarget":
        """The same dispatch (same executor, not owned by the copy) of ``inner``, with its own warm starts."""
        other = copy.copy(self)
        other.target = inner
        other.warm_starts = WarmStarts()
        other._own = False
        return other

    def _submit(self, atoms, warm):
        args = (_run_task, self.target, atoms, warm, self.threads_per_task)
        if _is_dask(self.executor):
            return self.executor.submit(*args, pure=False)  # fresh key: a resubmission is a new task
        return self.executor.submit(*args)

    def _wait_first(self, futures):
        if _is_dask(self.executor):
            from distributed import wait

            return wait(futures, return_when="FIRST_COMPLETED").done
        return cf.wait(futures, return_when=cf.FIRST_COMPLETED).done

    def evaluate_streaming(self, atoms_list: Sequence[Any], chains: Sequence[int] | None = None):
        """Yield (j, TargetResult) in completion order; ``chains[j]`` (default j) is the chain of j."""
        chains = default_chains(atoms_list, chains)
        warms = [self.warm_starts.get(c, a) if self.warm_start else None for c, a in zip(chains, atoms_list)]
        futs = {self._submit(a, w): j for j, (a, w) in enumerate(zip(atoms_list, warms))}
        tries = [0] * len(atoms_list)

        def resubmit(j, err):
            tries[j] += 1
            if tries[j] > self.max_resubmits:
                raise RuntimeError(f"configuration {j} lost its worker {tries[j]} times") from err
            self.resubmitted += 1
            futs[self._submit(atoms_list[j], warms[j])] = j

        while futs:
            for done in self._wait_first(list(futs)):
                if done not in futs:  # the pool was replaced while handling this round
                    continue
                j = futs.pop(done)
                try:
                    res, state = done.result()
                except TargetEvaluationError as err:
                    err.index = j
                    raise
                except BrokenProcessPool as err:
                    if not self._own:
                        raise
                    self._restart_pool(futs, resubmit, err)
                    resubmit(j, err)
                    continue
                except Exception as err:
                    if _is_dask(self.executor) and type(err).__name__ in _LOST_TASK_ERRORS:
                        resubmit(j, err)
                        continue
                    raise
                self.warm_starts.put(chains[j], atoms_list[j], state)
                yield j, res

    def _restart_pool(self, futs, resubmit, err):
        """Replace a broken local pool; resubmit every pending task that has no result."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor = self._new_pool()
        for f, j in list(futs.items()):
            if f.done() and not f.cancelled() and f.exception() is None:
                continue  # finished before the crash: keep its result
            del futs[f]
            resubmit(j, err)

    def close(self):
        """Shut down the executor if this object created it."""
        if self._own:
            self.executor.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
