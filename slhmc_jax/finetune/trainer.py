"""``finetune``: the host-side loop around the pure steps, as a typed state passed through functions.

The loop state is a :class:`RunState` (device state, frozen and best leaves, the host counters
:class:`LoopState`, the history); :func:`_run_epoch` maps one to the next, :func:`_resume` restores
one from a checkpoint (whose format is the dict of :meth:`LoopState.to_checkpoint`).

Order of work in :func:`finetune` (everything that can fail on bad input happens before anything
is compiled):

1. read the data (ase.Atoms, extxyz, label store) and check it: non-empty sets, elements in the
   model's species table, finite labels, forces where the loss weights them; split off a validation
   set; check the strategy against the potential;
2. build the neighbour graphs and the static shape buckets;
3. refit the per-element E0 by least squares (:mod:`slhmc_jax.finetune.reference_energies`);
   pseudo-label the replay configurations with the frozen base model if asked
   (:mod:`slhmc_jax.finetune.evaluation`; the data and context: :mod:`slhmc_jax.finetune.context`);
4. train: for each epoch a seeded batch order, one jitted optimizer step per batch, validation with
   the EMA weights, early stopping, checkpoints, metrics files, progress bar;
5. return the best (or last) weights, LoRA adapters merged, as a potential of the same kind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax.finetune import checkpoint as ckpt
from slhmc_jax.finetune import history as hist
from slhmc_jax.finetune import strategies
from slhmc_jax.finetune.batching import assemble
from slhmc_jax.finetune.context import RunContext, RunData, build_context, cast_params, epoch_plan, load_and_check, with_params
from slhmc_jax.finetune.data import fingerprint
from slhmc_jax.finetune.evaluation import prepare_labels
from slhmc_jax.finetune.optim import current_learning_rate
from slhmc_jax.finetune.settings import FinetuneSettings
from slhmc_jax.finetune.step import TrainState, accumulate, combine, init_state, make_train_step


@dataclasses.dataclass(frozen=True)
class FinetuneResult:
    """What :func:`finetune` returns.

    Attributes:
        potential: the trained model, a Potential of the input's kind (LoRA adapters merged; the EMA
            weights of the best validation epoch with ``restore_best``).
        history: per-epoch metrics; entry 0 is the model before training.
        best_epoch: epoch with the lowest validation loss (0: training never improved on the start).
        stopped: "completed", "early_stopping", "max_steps" (the last weights are returned, and a call
            with ``resume=True`` continues) or "diverged" (a non-finite loss; the best weights are returned).
        steps: optimizer updates done (in total, over resumed runs).
        compiled_shapes: distinct batch shapes the train step ran on (<= n_buckets).
        n_trainable: number of trained scalars (for LoRA: adapter entries).
        trained: the trained leaves by pytree path as returned (LoRA: the adapters
            {path: {"A": (mul_in, r), "B": (r, mul_out)}}, already merged into ``potential``).
        reference_energies_eV: the refitted per-element E0 (species-table order), or None.
        settings: the settings used.
    """

    potential: Any
    history: tuple[hist.EpochMetrics, ...]
    best_epoch: int
    stopped: str
    steps: int
    compiled_shapes: int
    n_trainable: int
    trained: dict
    reference_energies_eV: tuple[float, ...] | None
    settings: FinetuneSettings


# ----------------------------------------------------------------------------------------
# the loop


_TRAJECTORY_KEYS = ("output_dir", "resume", "max_steps", "progress", "plot", "checkpoint_every_steps")


def _run_fingerprint(settings, data: RunData, potential) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in settings.to_dict().items() if k not in _TRAJECTORY_KEYS}, sort_keys=True).encode())
    for s in (data.train, data.valid, data.replay):
        h.update(fingerprint(s).encode())
    for leaf in jax.tree_util.tree_leaves(potential.params):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()


def _progress(settings, total, initial):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=None if settings.progress else True, unit="step",
                desc="finetune", dynamic_ncols=True, leave=False)


_NO_SUMS = np.zeros(9)
_NO_SUMS.flags.writeable = False  # the shared default of LoopState.acc: replaced, never written


class LoopState(NamedTuple):
    """The host-side counters of the training loop, checkpointed with the device state.

    Attributes:
        epoch: epochs completed.
        batch: batches of epoch ``epoch + 1`` done (0 at an epoch boundary).
        best_loss: lowest validation loss so far (epoch 0 included).
        best_epoch: the epoch that reached it (0: the starting model).
        bad_epochs: epochs in a row without a lower validation loss (early stopping).
        acc: (9,) float64 error sums of the epoch's batches so far (ErrorSums order), as of the last
            checkpoint or epoch end.
        acc_loss: the epoch's batch losses times their training-structure counts, summed.
        acc_n: training structures of the epoch so far.
        train_wall_s: seconds of the epoch's optimizer steps so far.
        wall_s: seconds since the run started (over resumed calls), as of the last sync.
        stopped: why training stopped ("early_stopping", "diverged", "max_steps"), "" while it runs.
    """

    epoch: int = 0
    batch: int = 0
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    acc: np.ndarray = _NO_SUMS
    acc_loss: float = 0.0
    acc_n: int = 0
    train_wall_s: float = 0.0
    wall_s: float = 0.0
    stopped: str = ""

    def to_checkpoint(self) -> dict:
        """The checkpoint's "loop" entry (a dict of these keys; the format of every checkpoint so far)."""
        return {k: (np.asarray(v) if k == "acc" else v) for k, v in self._asdict().items()}

    @classmethod
    def from_checkpoint(cls, loop: dict) -> "LoopState":
        return cls(**{f: (np.asarray(loop[f], np.float64) if f == "acc" else type(cls._field_defaults[f])(loop[f]))
                      for f in cls._fields})


class RunState(NamedTuple):
    """Everything :func:`finetune` carries from batch to batch.

    Attributes:
        train: the device state (step, trainable leaves, optimizer state, EMA).
        frozen: the parameters that do not train.
        best: the EMA trainable leaves of the best validation epoch so far.
        loop: the host counters.
        history: the per-epoch metrics so far (epoch 0 first).
        host_step: optimizer updates done, counted on the host (== train.step without a device sync).
        shapes: bucket levels the train step ran on in this call.
    """

    train: TrainState
    frozen: Any
    best: Any
    loop: LoopState
    history: tuple[hist.EpochMetrics, ...]
    host_step: int = 0
    shapes: frozenset = frozenset()


@dataclasses.dataclass(frozen=True)
class _Session:
    """What one :func:`finetune` call holds fixed while it trains."""

    ctx: RunContext
    train_step: Any
    run_id: str
    checkpoint_path: str | None
    t_start: float  # perf_counter origin: wall_s = now - t_start (shifted back by a resumed run's wall_s)
    bar: Any  # tqdm progress bar, one tick per optimizer step

    def save(self, run: RunState) -> None:
        """Checkpoint ``run`` (no-op without an output directory)."""
        if self.checkpoint_path is not None:
            ckpt.save(self.checkpoint_path, _snapshot(self.run_id, run))


def _snapshot(run_id: str, run: RunState) -> dict:
    """The checkpoint's content: run id, device state, frozen and best leaves, loop counters, history (JSON)."""
    return {"id": run_id, "state": run.train, "frozen": run.frozen, "best": run.best, "loop": run.loop.to_checkpoint(),
            "history": json.dumps(hist.to_jsonable(run.history))}


def _resume(path: str, fresh: RunState, run_id: str) -> RunState:
    """The run saved at ``path`` (restored into the layout of ``fresh``); a run stopped by max_steps
    continues. Raises ValueError for a checkpoint of another run."""
    restored = ckpt.load(path, _snapshot(run_id, fresh), expect_id=run_id)
    state = jax.tree.map(jnp.asarray, restored["state"])
    state = state if isinstance(state, TrainState) else TrainState(*state)
    loop = LoopState.from_checkpoint(restored["loop"])
    if loop.stopped == "max_steps":
        loop = loop._replace(stopped="")  # the interrupted run continues
    return RunState(train=state, frozen=jax.tree.map(jnp.asarray, restored["frozen"]),
                    best=jax.tree.map(jnp.asarray, restored["best"]), loop=loop,
                    history=tuple(hist.from_jsonable(json.loads(restored["history"]))), host_step=int(state.step))


def _validation_metrics(ctx: RunContext, run: RunState) -> dict[str, float]:
    """valid_* (and replay_*) metrics of the EMA weights."""
    params_now = combine(ctx.split, run.train.ema, run.frozen)
    sums, value, _ = ctx.evaluate(params_now, ctx.valid)
    out = hist.metrics_from_sums("valid", sums, value)
    if ctx.replay:
        rs, rv, _ = ctx.evaluate(params_now, ctx.replay)
        out.update(hist.metrics_from_sums("replay", rs, rv))
    return out


def _start_row(ctx: RunContext, run: RunState) -> RunState:
    """The run with history row 0: the starting model's validation metrics (its loss is the best so far)."""
    row = hist.EpochMetrics(epoch=0, step=0, learning_rate=current_learning_rate(ctx.spec.optimizer, run.train.opt_state, 0),
                            wall_s=0.0, train_wall_s=0.0, structures_per_s=math.nan, **_validation_metrics(ctx, run))
    return run._replace(history=run.history + (row,), loop=run.loop._replace(best_loss=row.valid_loss))


def _train_batches(session: _Session, run: RunState, epoch: int) -> RunState:
    """The optimizer steps of ``epoch`` from batch ``run.loop.batch`` on, checkpointing every
    ``checkpoint_every_steps`` and at ``max_steps``; stops mid-epoch (``loop.stopped = "max_steps"``)
    when the step limit falls inside the epoch. At the epoch's end ``loop.acc`` holds its sums."""
    ctx, settings = session.ctx, session.ctx.settings
    per_batch = settings.batch_size - int(round(settings.replay_fraction * settings.batch_size))
    plan = epoch_plan(settings, ctx.train, per_batch, len(ctx.replay), epoch, ctx.buckets.exact_atoms)
    acc = jnp.asarray(run.loop.acc, jnp.float64)  # on device: no host sync per step
    acc_loss = jnp.asarray(run.loop.acc_loss, jnp.float64)
    t0 = time.perf_counter()
    for b_idx in range(run.loop.batch, len(plan)):
        if settings.max_steps and run.host_step >= settings.max_steps:
            return run._replace(loop=run.loop._replace(stopped="max_steps"))
        tr, rp = plan[b_idx]
        level, batch = assemble([ctx.train[i] for i in tr] + [ctx.replay[i] for i in rp], ctx.buckets, ctx.dtype)
        state, out = session.train_step(run.train, run.frozen, batch)
        acc, acc_loss = accumulate(acc, acc_loss, out, len(tr))
        run = run._replace(train=state, host_step=run.host_step + 1, shapes=run.shapes | {level},
                           loop=run.loop._replace(acc_n=run.loop.acc_n + len(tr), batch=b_idx + 1))
        session.bar.update(1)
        at_limit = bool(settings.max_steps) and run.host_step >= settings.max_steps
        if (settings.checkpoint_every_steps and run.host_step % settings.checkpoint_every_steps == 0) or at_limit:
            run, t0 = _synced(run, acc, acc_loss, t0, session.t_start)
            if at_limit and run.loop.batch < len(plan):
                run = run._replace(loop=run.loop._replace(stopped="max_steps"))
                session.save(run)
                return run
            session.save(run)
    return _synced(run, acc, acc_loss, t0, None)[0]


def _synced(run: RunState, acc, acc_loss, t0: float, t_start: float | None) -> tuple[RunState, float]:
    """(``run`` once the device caught up, the time it did): the epoch sums on the host, the step
    time since ``t0`` added (and the run's wall time, at a checkpoint: ``t_start`` given)."""
    jax.block_until_ready(run.train)
    now = time.perf_counter()
    loop = run.loop._replace(train_wall_s=run.loop.train_wall_s + now - t0, acc=np.asarray(acc, np.float64),
                             acc_loss=float(acc_loss))
    if t_start is not None:
        loop = loop._replace(wall_s=time.perf_counter() - t_start)
    return run._replace(loop=loop), now


def _stop_reason(settings: FinetuneSettings, loop: LoopState, row: hist.EpochMetrics, step: int) -> str:
    """Why training stops after an epoch ("" to go on): a non-finite loss (the best finite weights are
    kept), no better validation loss for ``early_stopping_patience`` epochs, or ``max_steps`` reached."""
    if not math.isfinite(row.train_loss) or not math.isfinite(row.valid_loss):
        return "diverged"
    if settings.early_stopping_patience and loop.bad_epochs >= settings.early_stopping_patience:
        return "early_stopping"
    if settings.max_steps and step >= settings.max_steps and loop.epoch < settings.epochs:
        return "max_steps"
    return ""


def _run_epoch(session: _Session, run: RunState) -> RunState:
    """One epoch (or the rest of one, after a resume): its steps, then metrics, best weights, the
    stopping rules, a checkpoint and the metrics files."""
    ctx, settings = session.ctx, session.ctx.settings
    epoch = run.loop.epoch + 1
    run = _train_batches(session, run, epoch)
    if run.loop.stopped:
        return run
    loop = run.loop
    train_m = hist.metrics_from_sums("train", loop.acc, loop.acc_loss / max(loop.acc_n, 1))
    valid_m = _validation_metrics(ctx, run)
    wall = time.perf_counter() - session.t_start
    step = int(run.train.step)
    row = hist.EpochMetrics(
        epoch=epoch, step=step, learning_rate=current_learning_rate(ctx.spec.optimizer, run.train.opt_state, step),
        wall_s=wall, train_wall_s=loop.train_wall_s,
        structures_per_s=loop.acc_n / loop.train_wall_s if loop.train_wall_s > 0 else math.nan, **train_m, **valid_m)
    session.bar.set_postfix(loss=f"{row.train_loss:.3g}", valid_F_rmse=f"{row.valid_forces_rmse_eV_A:.3g}")
    better = row.valid_loss < loop.best_loss
    loop = LoopState(epoch=epoch, best_loss=row.valid_loss if better else loop.best_loss,
                     best_epoch=epoch if better else loop.best_epoch, bad_epochs=0 if better else loop.bad_epochs + 1,
                     wall_s=wall)
    loop = loop._replace(stopped=_stop_reason(settings, loop, row, step))
    run = run._replace(loop=loop, history=run.history + (row,), best=run.train.ema if better else run.best)
    session.save(run)
    if settings.output_dir is not None:
        hist.write(run.history, settings.output_dir, plot=False)
    return run


def _initial_run(ctx: RunContext, params, settings: FinetuneSettings) -> RunState:
    trainable, frozen = strategies.partition(ctx.split, params)
    if ctx.split.lora:
        trainable = strategies.init_lora(ctx.split, params, settings.lora_rank, settings.seed)
    state = init_state(ctx.spec, trainable)
    return RunState(train=state, frozen=frozen, best=state.ema, loop=LoopState(), history=(), host_step=int(state.step))


def finetune(potential, train, valid=None, *, settings: FinetuneSettings = FinetuneSettings(), replay=None) -> FinetuneResult:
    """Fine-tune ``potential``'s parameters on labelled structures with optax.

    Args:
        potential: any Potential (MACE, a FlaxPotential, or a dataclass Potential with parameters).
        train: training structures: a list of ase.Atoms with energies and forces (stress optional)
            on a SinglePointCalculator or in ``info`` / ``arrays`` (REF_energy, REF_forces,
            REF_stress, or energy / forces / stress), an extxyz path, or a label-store path.
        valid: validation structures (same forms); None: ``settings.valid_fraction`` of ``train``.
        settings: :class:`FinetuneSettings`.
        replay: replay structures (same forms) for ``replay_fraction > 0``: a file of
            source-functional labels (energies re-referenced to the model's E0 by a per-element
            least-squares shift) or configurations to pseudo-label with the frozen base model
            (``replay_labels="base_model"``; e.g. the states the sampler visited).

    Returns:
        FinetuneResult (``.potential``, ``.history``, ...).

    Raises:
        ValueError: on bad data or settings, before anything is compiled.
    """
    if not isinstance(settings, FinetuneSettings):
        raise TypeError(f"settings must be a FinetuneSettings; got {type(settings).__name__}")
    data = load_and_check(potential, train, valid, replay, settings)
    run_id = _run_fingerprint(settings, data, potential)
    potential = cast_params(potential, settings.dtype)
    ctx = build_context(potential, data, settings)
    params, e0_fit = prepare_labels(ctx, potential, settings)
    run = _initial_run(ctx, params, settings)
    out_dir = settings.output_dir
    ck_path = None if out_dir is None else os.path.join(out_dir, ckpt.FILENAME)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
    if settings.resume and ck_path is not None and os.path.exists(ck_path):
        run = _resume(ck_path, run, run_id)
    if not run.history:
        run = _start_row(ctx, run)
    bar = _progress(settings, ctx.spec.optimizer.steps_per_epoch * settings.epochs, run.host_step)
    session = _Session(ctx, make_train_step(ctx.spec), run_id, ck_path, time.perf_counter() - run.loop.wall_s, bar)
    try:
        while run.loop.epoch < settings.epochs and not run.loop.stopped:
            run = _run_epoch(session, run)
    finally:
        bar.close()
    if out_dir is not None:
        hist.write(run.history, out_dir, plot=settings.plot)
    return _result(potential, ctx, run, e0_fit)


def _result(potential, ctx: RunContext, run: RunState, e0_fit) -> FinetuneResult:
    """The returned weights: the best epoch's (diverged, or ``restore_best`` after a finished run),
    else the last EMA weights (a run stopped by max_steps continues from them)."""
    settings = ctx.settings
    stopped = run.loop.stopped or "completed"
    final = run.best if (stopped == "diverged" or (settings.restore_best and stopped != "max_steps")) else run.train.ema
    return FinetuneResult(
        potential=with_params(potential, strategies.combine(ctx.split, final, run.frozen)),
        history=run.history,
        best_epoch=int(run.loop.best_epoch),
        stopped=stopped,
        steps=int(run.train.step),
        compiled_shapes=len(run.shapes),
        n_trainable=strategies.n_trainable(run.train.trainable),
        trained=final,
        reference_energies_eV=None if e0_fit is None else tuple(float(v) for v in e0_fit.E0_eV),
        settings=settings,
    )
