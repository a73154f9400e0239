"""The files of a run directory besides trajectories: the config it belongs to, and models.

``slhmc run`` and ``slhmc validate`` resume from what their directory holds, so a directory is
claimed by one config (:func:`claim_run_directory`) and a model file appears only once complete
(:func:`save_model`). Every write is atomic (:mod:`slhmc_jax.files`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from slhmc_jax.app.config import ConfigError
from slhmc_jax.files import atomic_write, write_npz


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
    """The parameter file of the model saved under ``path_stem`` (``<stem>.params.npz``)."""
    return path_stem.with_name(path_stem.name + ".params.npz")


def _leaf_names(params) -> list[str]:
    """The key path of every leaf of a parameter pytree, in flattening order (the npz entry names)."""
    import jax

    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def save_model(potential, path_stem: Path) -> None:
    """params (always; plain arrays in an npz, no pickle, reloaded onto the foundation's structure),
    MACE native .npz and mace-torch .model.

    The params file is written last: its presence means the model is complete.
    """
    import jax

    path_stem.parent.mkdir(parents=True, exist_ok=True)
    leaves = [np.asarray(v) for v in jax.tree_util.tree_leaves(potential.params)]
    arrays = {f"leaf_{i:05d}": v for i, v in enumerate(leaves)}
    arrays["leaf_paths"] = np.asarray(_leaf_names(potential.params))
    if hasattr(potential, "hyperparameters"):  # a MACE: files the world reads too
        from slhmc_jax.models import mace

        mace.save(potential, path_stem.with_suffix(".npz"))
        try:
            mace.save_torch(potential, path_stem.with_suffix(".model"))
        except ImportError:
            pass
    write_npz(model_path(path_stem), **arrays)


def load_model(base, path_stem: Path):
    """The model saved by :func:`save_model` (on the structure of ``base``), or None if not there.

    Raises:
        ValueError: the file's parameters do not fit ``base`` (other leaves or shapes).
    """
    import jax
    import jax.numpy as jnp

    path = model_path(path_stem)
    if not path.exists():
        return None
    leaves, treedef = jax.tree_util.tree_flatten(base.params)
    with np.load(path, allow_pickle=False) as data:
        names = [str(n) for n in data["leaf_paths"]]
        saved = [data[f"leaf_{i:05d}"] for i in range(len(names))]
    if names != _leaf_names(base.params) or any(np.shape(a) != np.shape(b) for a, b in zip(saved, leaves)):
        raise ValueError(f"{path} holds parameters of another model structure than the run's foundation")
    return dataclasses.replace(base, params=jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in saved]))
