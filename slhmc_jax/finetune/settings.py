"""Typed, validated settings of a fine-tuning run (:class:`FinetuneSettings`), one per TOML key.

Every field is checked when the dataclass is built (with :class:`slhmc_jax.checks.FieldCheck`, the
package's one settings mechanism); a bad value raises ``ValueError`` naming the field, the value and
what is allowed, before any data is read or anything is compiled.

Each field is declared once. The loss fields form :class:`LossSettings` and the optimizer fields
:class:`OptimizerSettings`; :class:`FinetuneSettings` inherits both groups and adds data, strategy,
batching and output fields, so ``FinetuneSettings(epochs=..., forces_weight=..., strategy=...)``
takes every key flat (as the TOML table does). The loss and the optimizer are given their group
alone (:meth:`LossSettings.of`, :meth:`slhmc_jax.finetune.optim.OptimizerConfig.from_settings`):
a static, hashable view, so a change of, say, ``output_dir`` recompiles nothing.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from slhmc_jax.checks import FieldCheck

STRATEGIES = ("naive", "freeze", "lora", "replay")
FREEZE_TRAINABLE = ("readouts", "readouts+last_interaction")
OPTIMIZERS = ("adamw", "amsgrad")
SCHEDULES = ("warmup_cosine", "plateau", "constant")
LOSSES = ("mse", "huber")
LAYOUTS = ("flat", "vmap")
REPLAY_LABELS = ("data", "base_model")
LORA_TARGETS = ("linear_up", "linear", "product_linear", "readout", "radial_mlp")
DTYPES = ("float32", "float64")

LOSS_WEIGHTS = ("energy_weight", "forces_weight", "stress_weight")
HUBER_DELTAS = ("huber_delta_energy_eV_atom", "huber_delta_forces_eV_A", "huber_delta_stress_eV_A3")


def _field_check(obj) -> FieldCheck:
    """Errors name the field as ``<class>.<field>`` (e.g. ``FinetuneSettings.batch_size``)."""
    return FieldCheck(obj, label=lambda name: f"{type(obj).__name__}.{name}")


class _Group:
    """A field group: its own instance from any object that carries its fields (a view)."""

    @classmethod
    def of(cls, settings, **extra):
        """The group's fields read from ``settings`` (e.g. a FinetuneSettings), plus ``extra`` fields."""
        return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls) if f.name not in extra}, **extra)


@dataclasses.dataclass(frozen=True)
class LossSettings(_Group):
    """The loss (per batch of B structures; see :mod:`slhmc_jax.finetune.loss` for the equation).

    Attributes:
        loss: "mse" or "huber" (optax.huber_loss, 0.5 x^2 inside delta, as torch's huber_loss that
            mace-torch's Huber and universal losses use).
        energy_weight: weight of the per-atom energy term, 1/(eV/atom)^2.
        forces_weight: weight of the force term, 1/(eV/A)^2 (mace-torch's default 100).
        stress_weight: weight of the stress term, 1/(eV/A^3)^2 (0: stress labels optional).
        huber_delta_energy_eV_atom, huber_delta_forces_eV_A, huber_delta_stress_eV_A3: Huber deltas.
    """

    loss: str = "mse"
    energy_weight: float = 1.0
    forces_weight: float = 100.0
    stress_weight: float = 0.0
    huber_delta_energy_eV_atom: float = 0.01
    huber_delta_forces_eV_A: float = 0.01
    huber_delta_stress_eV_A3: float = 0.01

    def __post_init__(self):
        self.check_loss_fields(_field_check(self))

    def check_loss_fields(self, check: FieldCheck) -> None:
        check.choice("loss", LOSSES)
        for name in LOSS_WEIGHTS:
            check.number(name, 0.0)
        check.require(any(getattr(self, name) != 0 for name in LOSS_WEIGHTS), "energy_weight",
                      "> 0 for at least one of energy_weight, forces_weight, stress_weight")
        for name in HUBER_DELTAS:
            check.number(name, 0.0, lo_open=True)


@dataclasses.dataclass(frozen=True)
class OptimizerSettings(_Group):
    """The optimizer, its schedule and the weight EMA (see :mod:`slhmc_jax.finetune.optim`).

    Attributes:
        epochs: passes over the training set.
        learning_rate: peak learning rate.
        optimizer: "adamw" (Adam with decoupled weight decay) or "amsgrad".
        weight_decay: decoupled weight decay (AdamW), per step times the learning rate.
        schedule: "warmup_cosine", "plateau" (optax.contrib.reduce_on_plateau on the epoch-mean
            training loss) or "constant".
        warmup_fraction: warm-up steps as a fraction of all steps (warmup_cosine).
        final_lr_factor: learning rate at the end of the cosine, as a fraction of the peak.
        plateau_factor, plateau_patience_epochs: reduce-on-plateau factor and patience.
        max_grad_norm: global-norm gradient clipping (None: off).
        ema_decay: decay of the exponential moving average of the weights (None: off); the EMA
            weights are the ones evaluated, kept and saved (warm-up min(decay, (1+n)/(10+n)) as
            mace-torch's torch_ema).
    """

    epochs: int = 50
    learning_rate: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    schedule: str = "warmup_cosine"
    warmup_fraction: float = 0.05
    final_lr_factor: float = 0.01
    plateau_factor: float = 0.8
    plateau_patience_epochs: int = 5
    max_grad_norm: float | None = 10.0
    ema_decay: float | None = 0.99

    def __post_init__(self):
        self.check_optimizer_fields(_field_check(self))

    def check_optimizer_fields(self, check: FieldCheck) -> None:
        check.integer("epochs", 1)
        check.number("learning_rate", 0.0, lo_open=True)
        check.choice("optimizer", OPTIMIZERS)
        check.number("weight_decay", 0.0)
        check.choice("schedule", SCHEDULES)
        check.number("warmup_fraction", 0.0, 1.0, hi_open=True)
        check.number("final_lr_factor", 0.0, 1.0)
        check.number("plateau_factor", 0.0, 1.0, lo_open=True, hi_open=True)
        check.integer("plateau_patience_epochs", 1)
        check.number("max_grad_norm", 0.0, lo_open=True, optional=True)
        check.number("ema_decay", 0.0, 1.0, hi_open=True, optional=True)


@dataclasses.dataclass(frozen=True)
class FinetuneSettings(LossSettings, OptimizerSettings):
    """How to fine-tune: the optimizer (:class:`OptimizerSettings`: epochs, learning_rate, ...),
    the loss (:class:`LossSettings`: loss, energy_weight, ...), and:

    Strategy:
        strategy: "naive" (every trainable weight), "freeze" (only ``freeze_trainable``),
            "lora" (rank-``lora_rank`` adapters W + (lora_alpha / lora_rank) A B on the
            ``lora_targets`` weight matrices, merged on save) or "replay" (naive, with a
            ``replay_fraction`` of every batch drawn from the replay data).
        freeze_trainable: "readouts" or "readouts+last_interaction".
        lora_rank, lora_alpha, lora_targets: LoRA adapters (see :mod:`slhmc_jax.finetune.strategies`).
        replay_fraction: fraction of each batch taken from the replay set, in [0, 1).
        replay_labels: "data" (the replay structures' own labels, e.g. the source functional's)
            or "base_model" (pseudo-labels from the frozen base model after the E0 refit).
        refit_e0: refit the per-element reference energies by least squares before training.

    Data and stopping:
        batch_size: structures per optimizer step.
        valid_fraction: fraction of ``train`` held out for validation when ``valid`` is not given,
            in (0, 1).
        early_stopping_patience: epochs without a better validation loss before stopping (None: off).
        restore_best: return the weights of the epoch with the lowest validation loss.
        seed: data order, validation split and LoRA initialisation.

    Batching and precision:
        n_buckets: at most this many static (atoms, edges) batch shapes, so the train step compiles at
            most this many times (levels: quantiles of the run's batch sizes; a level within 10% of
            the next is merged into it).
        batch_layout: "flat" (the batch is one graph; default) or "vmap" (each structure padded to
            a common size and vmapped). Measured on 2 CPU cores, MACE-MP-0 small, batches of 8- and
            16-atom cells: flat 324 ms vs vmap 568 ms per step with slots (450 vs 736 with scatter).
        edge_slots: MACE sums messages per receiver in fixed neighbour slots (sized to the data's
            largest neighbour count); False: scatter-sum. Slots were faster here at the MACE-MP-0
            small size (324 vs 450 ms per train step of 4 structures) and compile about as fast, but
            up to 3x slower for tiny test models.
        dtype: "float32" or "float64" (None: the potential's parameter dtype).

    Output:
        output_dir: where checkpoints, metrics.csv, metrics.json and learning_curve.png go (None: nowhere).
        checkpoint_every_steps: also checkpoint every this many optimizer steps (None: each epoch end).
        resume: continue from ``output_dir``'s checkpoint if there is one.
        max_steps: stop after this many optimizer steps in total (checkpointed; a later call with
            ``resume=True`` continues). None: run all epochs.
        progress: show a progress bar (tqdm; off when stderr is not a terminal).
        plot: write the PNG learning curve (matplotlib) when ``output_dir`` is set.
    """

    batch_size: int = 4
    strategy: str = "naive"
    freeze_trainable: str = "readouts"
    lora_rank: int = 4
    lora_alpha: float = 4.0
    lora_targets: tuple[str, ...] = LORA_TARGETS
    replay_fraction: float = 0.0
    replay_labels: str = "data"
    refit_e0: bool = True
    valid_fraction: float = 0.1
    early_stopping_patience: int | None = 10
    restore_best: bool = True
    seed: int = 0
    n_buckets: int = 3
    batch_layout: str = "flat"
    edge_slots: bool = True
    dtype: str | None = None
    output_dir: str | None = None
    checkpoint_every_steps: int | None = None
    resume: bool = False
    max_steps: int | None = None
    progress: bool = True
    plot: bool = True

    def __post_init__(self):
        check = _field_check(self)
        self.check_optimizer_fields(check)
        check.integer("batch_size", 1)
        self.check_loss_fields(check)
        self._check_strategy(check)
        check.flag("refit_e0")
        check.number("valid_fraction", 0.0, 1.0, lo_open=True, hi_open=True)
        check.integer("early_stopping_patience", 1, optional=True)
        check.flag("restore_best")
        check.integer("seed", 0)
        check.integer("n_buckets", 1)
        check.choice("batch_layout", LAYOUTS)
        check.flag("edge_slots")
        check.choice("dtype", DTYPES, optional=True)
        self._check_output(check)

    def _check_strategy(self, check: FieldCheck) -> None:
        check.choice("strategy", STRATEGIES)
        check.choice("freeze_trainable", FREEZE_TRAINABLE)
        check.integer("lora_rank", 1)
        check.number("lora_alpha", 0.0, lo_open=True)
        targets = self.lora_targets
        check.require(not isinstance(targets, str) and isinstance(targets, (tuple, list)) and bool(targets)
                      and all(t in LORA_TARGETS for t in targets), "lora_targets",
                      f"a non-empty list drawn from {LORA_TARGETS}")
        object.__setattr__(self, "lora_targets", tuple(targets))
        check.number("replay_fraction", 0.0, 1.0, hi_open=True)
        check.require(self.strategy != "replay" or self.replay_fraction > 0, "replay_fraction",
                      "in (0, 1) with strategy='replay'")
        n_replay = round(self.replay_fraction * self.batch_size)  # replay structures per batch
        if self.replay_fraction > 0:
            check.require(n_replay >= 1, "replay_fraction",
                          f"large enough that replay_fraction * batch_size ({self.batch_size}) rounds to >= 1 structure")
            check.require(n_replay < self.batch_size, "replay_fraction",
                          f"small enough to leave >= 1 training structure per batch of {self.batch_size}")
        check.choice("replay_labels", REPLAY_LABELS)

    def _check_output(self, check: FieldCheck) -> None:
        if self.output_dir is not None:
            check.require(isinstance(self.output_dir, (str, os.PathLike)) and bool(str(self.output_dir)),
                          "output_dir", "a directory path or None")
            object.__setattr__(self, "output_dir", os.fspath(self.output_dir))
        check.integer("checkpoint_every_steps", 1, optional=True)
        check.flag("resume")
        check.require(not self.resume or self.output_dir is not None, "resume",
                      "False unless output_dir is set (the checkpoint lives there)")
        check.integer("max_steps", 1, optional=True)
        check.flag("progress")
        check.flag("plot")

    # ------------------------------------------------------------------------------------
    # mapping / TOML

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], **overrides) -> "FinetuneSettings":
        """Settings from a dict (e.g. a TOML table); unknown keys raise ValueError naming them."""
        merged = {**dict(values), **overrides}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ValueError(f"unknown FinetuneSettings key(s) {unknown}; allowed: {sorted(known)}")
        if "lora_targets" in merged and isinstance(merged["lora_targets"], list):
            merged["lora_targets"] = tuple(merged["lora_targets"])
        return cls(**merged)

    @classmethod
    def from_toml(cls, path, **overrides) -> "FinetuneSettings":
        """Settings from a TOML file: top-level keys, or a ``[finetune]`` table (other tables are ignored)."""
        import tomllib

        with open(path, "rb") as f:
            doc = tomllib.load(f)
        table = doc.get("finetune", doc)
        table = {k: v for k, v in table.items() if not isinstance(v, dict)}
        return cls.from_mapping(table, **overrides)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        return d
