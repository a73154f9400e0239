"""Per-epoch metrics (:class:`EpochMetrics`) and their files: metrics.csv, metrics.json, learning_curve.png."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from typing import Sequence

import numpy as np

from slhmc_jax.files import atomic_open, atomic_write, write_json

SETS = ("train", "valid", "replay")
QUANTITIES = (("energy", "eV_atom"), ("forces", "eV_A"), ("stress", "eV_A3"))


@dataclasses.dataclass(frozen=True)
class EpochMetrics:
    """One row of the learning curve. NaN where a quantity has no labels in a set.

    epoch 0 is the model before training (validation only). Energies are per atom (eV/atom),
    forces eV/A, stress eV/A^3; ``train_*`` from the batches as trained (weights before each
    update, target structures only), ``valid_*`` / ``replay_*`` from the evaluated (EMA) weights at
    the end of the epoch. ``train_wall_s``: seconds of the epoch's optimizer steps;
    ``structures_per_s``: training structures per second in those steps.
    """

    epoch: int
    step: int
    learning_rate: float
    wall_s: float
    train_wall_s: float
    structures_per_s: float
    train_loss: float = math.nan
    train_energy_rmse_eV_atom: float = math.nan
    train_energy_mae_eV_atom: float = math.nan
    train_forces_rmse_eV_A: float = math.nan
    train_forces_mae_eV_A: float = math.nan
    train_stress_rmse_eV_A3: float = math.nan
    train_stress_mae_eV_A3: float = math.nan
    valid_loss: float = math.nan
    valid_energy_rmse_eV_atom: float = math.nan
    valid_energy_mae_eV_atom: float = math.nan
    valid_forces_rmse_eV_A: float = math.nan
    valid_forces_mae_eV_A: float = math.nan
    valid_stress_rmse_eV_A3: float = math.nan
    valid_stress_mae_eV_A3: float = math.nan
    replay_loss: float = math.nan
    replay_energy_rmse_eV_atom: float = math.nan
    replay_energy_mae_eV_atom: float = math.nan
    replay_forces_rmse_eV_A: float = math.nan
    replay_forces_mae_eV_A: float = math.nan
    replay_stress_rmse_eV_A3: float = math.nan
    replay_stress_mae_eV_A3: float = math.nan

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def metrics_from_sums(prefix: str, sums: np.ndarray, loss: float | None = None) -> dict[str, float]:
    """RMSE / MAE from summed ErrorSums (a (9,) array in ErrorSums order)."""
    e_sq, e_abs, e_n, f_sq, f_abs, f_n, s_sq, s_abs, s_n = (float(v) for v in sums)
    out = {}
    for (q, unit), (sq, ab, n) in zip(QUANTITIES, ((e_sq, e_abs, e_n), (f_sq, f_abs, f_n), (s_sq, s_abs, s_n))):
        out[f"{prefix}_{q}_rmse_{unit}"] = math.sqrt(sq / n) if n > 0 else math.nan
        out[f"{prefix}_{q}_mae_{unit}"] = ab / n if n > 0 else math.nan
    if loss is not None:
        out[f"{prefix}_loss"] = float(loss)
    return out


def to_jsonable(history: Sequence[EpochMetrics]) -> list[dict]:
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in h.to_dict().items()} for h in history]


def from_jsonable(rows: Sequence[dict]) -> list[EpochMetrics]:
    return [EpochMetrics(**{k: (math.nan if v is None else v) for k, v in r.items()}) for r in rows]


def write(history: Sequence[EpochMetrics], output_dir: str, *, plot: bool = True) -> None:
    """metrics.csv, metrics.json (and learning_curve.png) in ``output_dir``, each written atomically."""
    os.makedirs(output_dir, exist_ok=True)
    fields = [f.name for f in dataclasses.fields(EpochMetrics)]
    table = io.StringIO(newline="")
    w = csv.DictWriter(table, fieldnames=fields)
    w.writeheader()
    for h in history:
        w.writerow(h.to_dict())
    atomic_write(os.path.join(output_dir, "metrics.csv"), table.getvalue().encode())  # bytes: csv's \r\n kept
    write_json(os.path.join(output_dir, "metrics.json"), to_jsonable(history), indent=1)
    if plot:
        plot_learning_curve(history, os.path.join(output_dir, "learning_curve.png"))


def plot_learning_curve(history: Sequence[EpochMetrics], path: str) -> None:
    """Loss and energy / force RMSE per epoch, train and validation, log scale (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h.epoch for h in history]
    panels = [("loss", "loss"), ("energy_rmse_eV_atom", "energy RMSE (eV/atom)"), ("forces_rmse_eV_A", "force RMSE (eV/A)")]
    if any(math.isfinite(h.valid_stress_rmse_eV_A3) for h in history):
        panels.append(("stress_rmse_eV_A3", "stress RMSE (eV/A^3)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (key, label) in zip(np.atleast_1d(axes), panels):
        for s, style in (("train", "-"), ("valid", "-o"), ("replay", "--")):
            ys = [getattr(h, f"{s}_{key}") for h in history]
            if any(math.isfinite(y) and y > 0 for y in ys):
                ax.plot(epochs, ys, style, label=s, markersize=3)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
