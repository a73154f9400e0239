"""The pure train and eval steps, from factories over a static :class:`StepSpec`.

    train_step = make_train_step(spec)
    state, out = train_step(state, frozen, batch)          # one optimizer update
    eval_step = make_eval_step(spec)
    pred, sums, loss = eval_step(combine(spec.split, trainable, frozen), batch)

Both are ``jax.jit`` of module-level functions with a static spec, so every run with an equal spec
shares the compiled code (the train step: same model, split, loss, optimizer, layout; the eval step:
same model, loss and layout, whatever the strategy); a new batch shape (bucket) compiles once.
``train_step`` never touches ``frozen``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from slhmc_jax.finetune import loss as loss_mod
from slhmc_jax.finetune import optim
from slhmc_jax.finetune import strategies
from slhmc_jax.finetune.model import predict_batch


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """Everything static about a step.

    Attributes:
        model: a GraphModel or PotentialModel (:mod:`slhmc_jax.finetune.model`).
        split: which parameters train (:class:`~slhmc_jax.finetune.strategies.ParamSplit`).
        loss: the loss config.
        optimizer: the optimizer config.
        layout: "flat" or "vmap".
        compute_stress: differentiate with respect to strain (stress term or stress metrics).
    """

    model: Any
    split: strategies.ParamSplit
    loss: loss_mod.LossSettings
    optimizer: optim.OptimizerConfig
    layout: str = "flat"
    compute_stress: bool = False


class TrainState(NamedTuple):
    """step: () int32 updates done; trainable: leaf dict; opt_state: optax state; ema: EMA of trainable."""

    step: jax.Array
    trainable: Any
    opt_state: Any
    ema: Any


class StepOutput(NamedTuple):
    """loss: () batch loss before the update; sums: error sums of the batch's target graphs."""

    loss: jax.Array
    sums: loss_mod.ErrorSums


def init_state(spec: StepSpec, trainable) -> TrainState:
    opt_state = optim.make_optimizer(spec.optimizer).init(trainable)
    return TrainState(jnp.zeros((), jnp.int32), trainable, opt_state, trainable)


def _loss_and_aux(trainable, frozen, batch, spec: StepSpec):
    params = strategies.combine(spec.split, trainable, frozen)
    pred, flat = predict_batch(spec.model, params, batch, spec.layout, spec.compute_stress)
    value = loss_mod.loss(pred, flat, spec.loss)
    return value, loss_mod.error_sums(pred, flat, flat.is_target)


@functools.partial(jax.jit, static_argnums=0)
def _train_step(spec: StepSpec, state: TrainState, frozen, batch) -> tuple[TrainState, StepOutput]:
    (value, sums), grads = jax.value_and_grad(_loss_and_aux, has_aux=True)(state.trainable, frozen, batch, spec)
    tx = optim.make_optimizer(spec.optimizer)
    updates, opt_state = tx.update(grads, state.opt_state, state.trainable, value=value)
    trainable = optax.apply_updates(state.trainable, updates)
    step = state.step + 1
    ema = optim.ema_update(spec.optimizer, state.ema, trainable, step)
    return TrainState(step, trainable, opt_state, ema), StepOutput(value, sums)


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """What an evaluation depends on (not the split or the optimizer: one compiled eval serves every strategy)."""

    model: Any
    loss: loss_mod.LossSettings
    layout: str = "flat"
    compute_stress: bool = False


@functools.partial(jax.jit, static_argnums=0)
def _eval_step(spec: EvalSpec, params, batch):
    pred, flat = predict_batch(spec.model, params, batch, spec.layout, spec.compute_stress)
    return pred, loss_mod.error_sums(pred, flat, flat.graph_mask), loss_mod.loss(pred, flat, spec.loss)


combine = jax.jit(strategies.combine, static_argnums=0)


@jax.jit
def accumulate(acc, acc_loss, out: StepOutput, n_structures):
    """Running epoch sums (float64, on device: no host sync per step): acc (9,) error sums, acc_loss
    the batch losses times their training-structure counts."""
    return (acc + jnp.stack(list(out.sums)).astype(acc.dtype),
            acc_loss + out.loss.astype(acc_loss.dtype) * n_structures)


def make_train_step(spec: StepSpec):
    """``train_step(state, frozen, batch) -> (state, StepOutput)``: one clipped, scheduled optimizer
    update of the trainable parameters on the loss of ``batch``, then the EMA update."""
    return functools.partial(_train_step, spec)


def make_eval_step(spec: StepSpec):
    """``eval_step(params, batch) -> (Predictions, ErrorSums, loss)`` on full parameters (no update;
    ``combine(spec.split, trainable, frozen)`` gives them). Predictions come in the flat-batch shapes
    of :func:`~slhmc_jax.finetune.model.predict_batch`."""
    return functools.partial(_eval_step, EvalSpec(spec.model, spec.loss, spec.layout, spec.compute_stress))


def compiled_shapes() -> int:
    """Distinct compiled train-step specializations in this process (for compile-count tests)."""
    return _train_step._cache_size()
