"""Read Nequix model files (``.nqx``) into :class:`~slhmc_jax.models.nequix.model.Nequix` parameters.

File format (nequix 0.4.x, ``nequix.model.save_model``): one line of JSON (the training config:
``atomic_numbers``, ``cutoff``, ``hidden_irreps``, ``lmax``, ``n_layers``, ``radial_*``,
``avg_n_neighbors``, ``scale``, ``shift``, ``index_weights``, ``layer_norm``, ...), then the
model's array leaves written one after another in NumPy ``.npy`` format (equinox's
``tree_serialise_leaves``), in the order of the equinox module's fields:

    atom_energies (n_species,)
    per layer: radial MLP kernels (in, out) ...; linear_1, linear_2, skip weights, each
               e3nn Linear's "w[i,o] in,out" entries in sorted-name order; RMS-norm weights per chunk
    readout weights

Arrays are read with ``allow_pickle=False``: nothing in the file can run code. The species
index of an element is its rank in the sorted ``atomic_numbers`` of the config.
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax.models.flax_potential import FlaxPotential, from_flax_module
from slhmc_jax.models.nequix.model import Nequix

__all__ = ["read_nqx", "module_from_config", "params_from_leaves", "load"]

def read_nqx(path) -> tuple[dict, list[np.ndarray]]:
    """(config dict, list of the array leaves in file order) of a ``.nqx`` file."""
    path = pathlib.Path(path)
    with open(path, "rb") as f:
        first = f.readline()
        try:
            config = json.loads(first.decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a Nequix model file (first line is not a JSON config)") from err
        size = path.stat().st_size
        leaves = []
        while size - f.tell() > 1:
            try:
                leaves.append(np.load(f, allow_pickle=False))
            except ValueError as err:
                raise ValueError(f"{path}: unreadable array leaf {len(leaves)} at byte {f.tell()}: {err}") from err
    return config, leaves


def module_from_config(config: dict, dtype=jnp.float32) -> Nequix:
    """The :class:`Nequix` module of a Nequix training config (the JSON line of a ``.nqx``)."""
    missing = [k for k in ("atomic_numbers", "cutoff", "hidden_irreps", "lmax", "n_layers") if k not in config]
    if missing:
        raise ValueError(f"Nequix config lacks {missing}")
    return Nequix(
        n_species=len(config["atomic_numbers"]),
        cutoff=float(config["cutoff"]),
        hidden_irreps=str(config["hidden_irreps"]),
        lmax=int(config["lmax"]),
        n_layers=int(config["n_layers"]),
        radial_basis_size=int(config.get("radial_basis_size", 8)),
        radial_mlp_size=int(config.get("radial_mlp_size", 64)),
        radial_mlp_layers=int(config.get("radial_mlp_layers", 3)),
        radial_polynomial_p=float(config.get("radial_polynomial_p", 2.0)),
        avg_n_neighbors=float(config.get("avg_n_neighbors", 1.0)),
        index_weights=bool(config.get("index_weights", True)),
        layer_norm=bool(config.get("layer_norm", False)),
        scale=float(config.get("scale", 1.0)),
        shift=float(config.get("shift", 0.0)),
        dtype=dtype,
    )


def _leaf_paths(module: Nequix, template: dict) -> list[tuple[str, ...]]:
    """Paths into ``template['params']`` in the order Nequix serialises its leaves."""

    def linear(prefix):
        node = template["params"]
        for key in prefix:
            node = node[key]
        return [(*prefix, name) for name in sorted(node)]

    paths = [("atom_energies",)]
    for t in range(module.n_layers):
        layer = f"layer_{t}"
        paths += [(layer, f"radial_{k}", "kernel") for k in range(module.radial_mlp_layers + 1)]
        for sub in ("linear_1", "linear_2", "skip"):
            paths += linear((layer, sub))
        norms = sorted((k for k in template["params"][layer] if k.startswith("norm_")), key=lambda k: int(k[5:]))
        paths += [(layer, k) for k in norms]
    return paths + linear(("readout",))


def params_from_leaves(module: Nequix, leaves: list[np.ndarray]) -> dict:
    """Flax parameters of ``module`` filled from the ``.nqx`` leaves (shapes checked one by one)."""
    n = module.n_species
    inputs = (jnp.array([0, min(1, n - 1)], jnp.int32), jnp.array([0, 1], jnp.int32), jnp.array([1, 0], jnp.int32),
              jnp.array([[1.0, 0.2, 0.1], [-1.0, -0.2, -0.1]], module.dtype), jnp.array([True, True]))
    template = jax.eval_shape(module.init, jax.random.PRNGKey(0), *inputs)
    paths = _leaf_paths(module, template)
    if len(paths) != len(leaves):
        raise ValueError(f"the file holds {len(leaves)} arrays; this architecture needs {len(paths)}")
    params: dict = {}
    for path, leaf in zip(paths, leaves):
        node = template["params"]
        for key in path:
            node = node[key]
        if tuple(node.shape) != tuple(leaf.shape):
            raise ValueError(f"parameter {'/'.join(path)}: file has shape {leaf.shape}, architecture needs {node.shape}")
        target = params
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = jnp.asarray(leaf, module.dtype)
    return {"params": params}


def load(path, dtype=jnp.float32) -> FlaxPotential:
    """A Nequix ``.nqx`` file as a :class:`FlaxPotential` (float32 by default, or float64).

    The species table is the sorted ``atomic_numbers`` of the file's config; the cutoff is its
    ``cutoff`` (Angstrom). A file whose arrays do not fit the architecture raises ValueError.
    """
    config, leaves = read_nqx(path)
    module = module_from_config(config, dtype=dtype)
    params = params_from_leaves(module, leaves)
    z = tuple(sorted(int(v) for v in config["atomic_numbers"]))
    return from_flax_module(module, z, module.cutoff, dtype=dtype, params=params)
