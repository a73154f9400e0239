"""The project's own MACE file format (no torch needed): one ``.npz`` holding the hyperparameters as
JSON and every parameter leaf under its pytree path. Round trips are bit-exact."""

from __future__ import annotations

import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax.files import write_npz
from slhmc_jax.models.mace.model import MACEHyperparameters, MACEPotential, potential_from_params

FORMAT = "slhmc_jax.mace/1"


def _key(path) -> str:
    parts = []
    for p in path:
        parts.append(str(p.key) if hasattr(p, "key") else str(p.idx))
    return "/".join(parts)


def save(potential: MACEPotential, path) -> None:
    """Write ``potential`` (hyperparameters + parameters) to ``path`` (.npz), atomically."""
    if potential.hyperparameters is None:
        raise ValueError("save() needs a MACEPotential with hyperparameters")
    arrays = {"__format__": np.asarray(FORMAT), "__hyperparameters__": np.asarray(potential.hyperparameters.to_json())}
    for path_, leaf in jax.tree_util.tree_flatten_with_path(potential.params)[0]:
        arrays["p/" + _key(path_)] = np.asarray(leaf)
    write_npz(path, **arrays)


def is_native(path) -> bool:
    """True if ``path`` is a file written by :func:`save`."""
    try:
        with zipfile.ZipFile(os.fspath(path)) as z:
            return "__format__.npy" in z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def load_native(path) -> MACEPotential:
    with np.load(os.fspath(path), allow_pickle=False) as data:
        fmt = str(data["__format__"])
        if fmt != FORMAT:
            raise ValueError(f"{path}: unknown format {fmt!r} (expected {FORMAT!r})")
        h = MACEHyperparameters.from_json(str(data["__hyperparameters__"]))
        leaves = {k[2:]: data[k] for k in data.files if k.startswith("p/")}
    from slhmc_jax.models.mace.model import init_params

    template = init_params(h, None, jnp.float64)
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    values = []
    for path_, _ in flat:
        key = _key(path_)
        if key not in leaves:
            raise ValueError(f"{path}: parameter {key!r} missing")
        values.append(jnp.asarray(leaves[key]))
    return potential_from_params(h, jax.tree_util.tree_unflatten(treedef, values))
