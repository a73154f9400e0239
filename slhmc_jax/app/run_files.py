"""The files of a run directory besides trajectories: the config it belongs to, and models.

``slhmc run`` and ``slhmc validate`` resume from what their directory holds, so a directory is
claimed by one config (:func:`claim_run_directory`) and a model file appears only once complete
(:func:`save_model`). Every write is atomic (:mod:`slhmc_jax.files`).
"""

from __future__ import annotations

import dataclasses
import io
import pickle
from pathlib import Path

import numpy as np

from slhmc_jax.app.config import ConfigError
from slhmc_jax.files import atomic_write


def claim_run_directory(directory: Path, config_text: str, what: str) -> None:
    """``directory/config.toml``: written on the first run, compared on a rerun.

    Raises:
        ConfigError: the directory holds ``what`` ("a run", "a validation") of another config
            (finished phases are read back, so resuming it would mix two runs).
    """
    path = Path(directory) / "config.toml"
    if path.exists():
        if path.read_text() != config_text:
            raise ConfigError(f"{directory} holds {what} of another config ({path}); use a new --run-dir "
                              f"or the same config to resume")
    else:
        atomic_write(path, config_text)


def model_path(path_stem: Path) -> Path:
    """The parameter file of the model saved under ``path_stem`` (``<stem>.params.pkl``)."""
    return path_stem.with_name(path_stem.name + ".params.pkl")


def save_model(potential, path_stem: Path) -> None:
    """params (always; reloaded onto the foundation's structure), MACE native .npz and mace-torch .model.

    The params file is written last: its presence means the model is complete.
    """
    import jax

    path_stem.parent.mkdir(parents=True, exist_ok=True)
    params = jax.tree_util.tree_map(np.asarray, potential.params)
    buffer = io.BytesIO()
    pickle.dump(params, buffer)  # the run directory's existing format (a pytree of NumPy arrays)
    if hasattr(potential, "hyperparameters"):  # a MACE: files the world reads too
        from slhmc_jax.models import mace

        mace.save(potential, path_stem.with_suffix(".npz"))
        try:
            mace.save_torch(potential, path_stem.with_suffix(".model"))
        except ImportError:
            pass
    atomic_write(model_path(path_stem), buffer.getvalue())


def load_model(base, path_stem: Path):
    """The model saved by :func:`save_model` (on the structure of ``base``), or None if not there."""
    path = model_path(path_stem)
    if not path.exists():
        return None
    with open(path, "rb") as fh:
        params = pickle.load(fh)
    import jax
    import jax.numpy as jnp

    return dataclasses.replace(base, params=jax.tree_util.tree_map(jnp.asarray, params))
