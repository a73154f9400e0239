"""Training checkpoints: one msgpack file (flax.serialization), written atomically.

Why not orbax-checkpoint: a fine-tuning state here is a few MB on one host (trainable leaves,
optimizer and EMA state, the loop counters, the history). flax.serialization (already a dependency,
maintained with flax) writes it synchronously into one file, which ``os.replace`` swaps in
atomically (:func:`slhmc_jax.files.atomic_write`), and restores it bit-exactly into a template pytree; orbax's asynchronous, sharded,
directory-per-step machinery is built for multi-host models and adds a dependency, a thread pool and
a directory layout that this needs none of.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from flax import serialization

from slhmc_jax.files import atomic_write

FORMAT = "slhmc_jax.finetune.checkpoint/1"
FILENAME = "checkpoint.msgpack"


def save(path, state: dict[str, Any]) -> None:
    """Write ``state`` (a dict of pytrees, NumPy arrays and JSON-able scalars / strings) atomically."""
    path = os.fspath(path)
    host = jax.tree.map(lambda x: np.asarray(x) if hasattr(x, "shape") else x, state)
    data = serialization.msgpack_serialize({"format": FORMAT, "state": serialization.to_state_dict(host)})
    atomic_write(path, data)


def _read(path) -> dict:
    with open(os.fspath(path), "rb") as f:
        raw = serialization.msgpack_restore(f.read())
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(f"{path}: not a fine-tuning checkpoint (format {found!r}, expected {FORMAT!r})")
    return raw["state"]


def load(path, template: dict[str, Any], *, expect_id: str | None = None) -> dict[str, Any]:
    """Restore a checkpoint into the structure of ``template`` (same keys and pytree layouts).

    ``expect_id``: the run fingerprint the checkpoint must carry under "id" (checked before restoring,
    so a checkpoint of another run fails with a clear message, not a layout mismatch).
    """
    raw = _read(path)
    if expect_id is not None and raw.get("id") != expect_id:
        raise ValueError(f"{path} belongs to another run (different data, settings or starting model); "
                         f"remove it or set resume=False")
    host_template = jax.tree.map(lambda x: np.asarray(x) if hasattr(x, "shape") else x, template)
    return serialization.from_state_dict(host_template, raw)
