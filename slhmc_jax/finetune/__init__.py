"""Fine-tuning with optax: from labelled (target-distributed DFT) structures to a better model.

    from slhmc_jax import finetune
    result = finetune.finetune(potential, "labels.extxyz", settings=finetune.FinetuneSettings(epochs=100))
    result.potential            # same kind as `potential` (LoRA merged); mace.save_torch(result.potential, ...)
    result.history              # per-epoch EpochMetrics (energy / force / stress RMSE and MAE, train and valid)
    finetune.refit_reference_energies(potential, structures)      # least-squares E0 only
    finetune.predict(potential, structures)                        # batched E, F, stress

Modules (one job each): ``settings`` (FinetuneSettings: the LossSettings and OptimizerSettings
field groups and the rest), ``data`` (read / check / split labels),
``batching`` (neighbour graphs, static shape buckets, padded batches), ``model`` (energies, forces,
stress of a batch), ``loss``, ``strategies`` (naive / freeze / LoRA), ``optim`` (the optax chain and
the weight EMA), ``step`` (the pure jitted train and eval steps), ``reference_energies`` (the E0
least squares), ``context`` (checked data, graphs, buckets and step spec of a run; batched evaluation),
``evaluation`` (predictions, the E0 refit, replay labels), ``checkpoint``, ``history`` (metrics files
and plot), ``trainer`` (the loop: a typed run state through ``_resume`` and ``_run_epoch``).
"""

from slhmc_jax import precision  # noqa: F401  (float64 available)
from slhmc_jax.finetune.data import LabelledStructure, read_structures
from slhmc_jax.finetune.history import EpochMetrics
from slhmc_jax.finetune.settings import FinetuneSettings
from slhmc_jax.finetune.step import StepSpec, make_eval_step, make_train_step
from slhmc_jax.finetune.evaluation import Prediction, predict, refit_reference_energies
from slhmc_jax.finetune.trainer import FinetuneResult, finetune

__all__ = [
    "EpochMetrics",
    "FinetuneResult",
    "FinetuneSettings",
    "LabelledStructure",
    "Prediction",
    "StepSpec",
    "finetune",
    "make_eval_step",
    "make_train_step",
    "predict",
    "read_structures",
    "refit_reference_energies",
]
