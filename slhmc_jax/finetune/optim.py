"""The optax optimizer of a run and the weight EMA, from a static (hashable) config.

    tx = chain(clip_by_global_norm(max_grad_norm),
               scale_by_adam | scale_by_amsgrad,
               add_decayed_weights(weight_decay, mask=matrices),      # decoupled (AdamW)
               scale_by_learning_rate(schedule),
               [contrib.reduce_on_plateau(factor, patience, accumulation_size=steps_per_epoch)])

Schedules: "warmup_cosine" (linear warm-up 0 -> lr over the warm-up steps, cosine to
final_lr_factor * lr at the last step), "constant", "plateau" (constant lr times the
reduce-on-plateau scale, which drops by ``factor`` after ``patience`` epochs whose mean training loss
did not improve).

EMA of the weights (evaluated and saved): theta_ema <- (1 - d_n) theta + d_n theta_ema with
d_n = min(decay, (1 + n) / (10 + n)) after update n (torch_ema's warm-up, as mace-torch), applied
with ``optax.incremental_update``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from slhmc_jax.checks import FieldCheck
from slhmc_jax.finetune.settings import OptimizerSettings


@dataclasses.dataclass(frozen=True)
class OptimizerConfig(OptimizerSettings):
    """Static optimizer description: the run's :class:`OptimizerSettings` fields and the number of
    optimizer steps per epoch, from which the schedule's step counts follow (see the module docstring).

    Attributes:
        steps_per_epoch: optimizer updates per epoch (>= 1; the plateau's accumulation size).
    """

    steps_per_epoch: int = 1

    def __post_init__(self):
        super().__post_init__()
        FieldCheck(self, label=lambda name: f"OptimizerConfig.{name}").integer("steps_per_epoch", 1)

    @property
    def total_steps(self) -> int:
        """Optimizer updates of the whole run (>= 1)."""
        return max(1, self.steps_per_epoch * self.epochs)

    @property
    def warmup_steps(self) -> int:
        """Linear warm-up updates: ``warmup_fraction`` of all, rounded."""
        return int(round(self.warmup_fraction * self.total_steps))

    @classmethod
    def from_settings(cls, s, steps_per_epoch: int) -> "OptimizerConfig":
        """The optimizer fields of ``s`` (a FinetuneSettings) with ``steps_per_epoch`` (at least 1)."""
        return cls.of(s, steps_per_epoch=max(1, steps_per_epoch))


def schedule(config: OptimizerConfig):
    """The learning-rate schedule step -> lr."""
    if config.schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=config.learning_rate, warmup_steps=config.warmup_steps,
            decay_steps=max(config.total_steps, config.warmup_steps + 1),
            end_value=config.learning_rate * config.final_lr_factor)
    return optax.constant_schedule(config.learning_rate)


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformationExtraArgs:
    """The optax chain of the module docstring. Its ``update`` takes ``value=loss`` (plateau)."""
    parts = []
    if config.max_grad_norm is not None:
        parts.append(optax.clip_by_global_norm(config.max_grad_norm))
    parts.append(optax.scale_by_amsgrad() if config.optimizer == "amsgrad" else optax.scale_by_adam())
    if config.weight_decay:
        parts.append(optax.add_decayed_weights(config.weight_decay, mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)))
    parts.append(optax.scale_by_learning_rate(schedule(config)))
    if config.schedule == "plateau":
        parts.append(optax.contrib.reduce_on_plateau(
            factor=config.plateau_factor, patience=config.plateau_patience_epochs, accumulation_size=config.steps_per_epoch))
    return optax.chain(*parts)


def ema_update(config: OptimizerConfig, ema, params, step):
    """EMA after optimizer update number ``step`` (1-based); the params themselves without EMA."""
    if config.ema_decay is None:
        return params
    n = jnp.asarray(step, jnp.float32)
    decay = jnp.minimum(config.ema_decay, (1.0 + n) / (10.0 + n))
    return optax.incremental_update(params, ema, step_size=1.0 - decay)


def current_learning_rate(config: OptimizerConfig, opt_state, step: int) -> float:
    """The learning rate of the next update (schedule value times the plateau scale), for the log."""
    lr = float(schedule(config)(step))
    if config.schedule == "plateau":
        for s in jax.tree_util.tree_leaves(opt_state, is_leaf=lambda x: hasattr(x, "scale") and hasattr(x, "plateau_count")):
            if hasattr(s, "scale"):
                lr *= float(s.scale)
    return lr
