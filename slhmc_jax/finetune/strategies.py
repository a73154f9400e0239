"""Which parameters train: naive, freeze and LoRA, as a split of the parameter pytree.

The parameter pytree is flattened to leaves keyed by their path ("interactions/0/linear/2").
A :class:`ParamSplit` (static, hashable) says which leaves are trainable; the optimizer only ever
sees the trainable ones, so frozen leaves are never touched (bit-identical after training).

- ``naive``: every floating-point leaf, except, for the MACE layout, the per-element reference
  energies ``atomic_energies`` (set by the least-squares refit) and ``scale`` / ``shift`` (buffers
  in mace-torch too).
- ``freeze``: only the readouts (``readouts/...``), or the readouts and the last interaction
  (``interactions/T-1``, ``products/T-1``).
- ``lora``: every base leaf frozen; each targeted weight matrix W (mul_in, mul_out) gets an adapter
  and the model uses

      W' = W + (alpha / r) A B,    A: (mul_in, r) ~ N(0, 1),  B: (r, mul_out) = 0 at the start,

  so training starts from the base model. In MACE's equivariant linear maps every weight matrix
  belongs to one (input irrep -> output irrep) path of equal irreps and mixes channels only (the same
  matrix acts on every m component), so W' does too: an adapter never mixes across irreps and the
  adapted model stays O(3)-equivariant. Radial-MLP and readout weights act on invariants.
  :func:`combine` folds the adapters into the base weights (what is evaluated and saved).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any

MACE_BUFFERS = ("atomic_energies", "scale", "shift")

LORA_PATTERNS = {
    "linear_up": r"^interactions/\d+/linear_up/\d+$",
    "linear": r"^interactions/\d+/linear/\d+$",
    "product_linear": r"^products/\d+/linear/\d+$",
    "readout": r"^readouts/\d+/[a-z_0-9]+/\d+$",
    "radial_mlp": r"^interactions/\d+/radial_mlp/\d+$",
}


def key_of(path) -> str:
    return "/".join(str(p.key) if hasattr(p, "key") else str(p.idx) for p in path)


def is_mace_layout(params) -> bool:
    return isinstance(params, dict) and {"interactions", "products", "readouts"} <= set(params)


@dataclasses.dataclass(frozen=True)
class ParamSplit:
    """Static description of the split (hashable; a jit static argument).

    Attributes:
        treedef: the full parameter pytree structure.
        keys: leaf keys in flattening order.
        trainable: per leaf, True if the optimizer updates it directly (naive / freeze).
        lora: keys of the leaves carrying a LoRA adapter.
        lora_scale: alpha / r.
    """

    treedef: Any
    keys: tuple[str, ...]
    trainable: tuple[bool, ...]
    lora: tuple[str, ...] = ()
    lora_scale: float = 1.0

    @property
    def trainable_keys(self) -> tuple[str, ...]:
        return tuple(k for k, t in zip(self.keys, self.trainable) if t)


def make_split(params, strategy: str, *, freeze_trainable: str = "readouts", lora_targets=(), lora_rank: int = 4,
               lora_alpha: float = 4.0) -> ParamSplit:
    """The split for ``strategy`` ("naive", "freeze", "lora"; "replay" trains like "naive")."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    keys = tuple(key_of(p) for p, _ in flat)
    floating = [jnp.issubdtype(jnp.asarray(v).dtype, jnp.floating) for _, v in flat]
    mace = is_mace_layout(params)
    if strategy in ("freeze", "lora") and not mace:
        raise ValueError(f"strategy {strategy!r} needs the MACE parameter layout (interactions / products / readouts); "
                         f"this potential's parameters have top-level keys "
                         f"{sorted(params) if isinstance(params, dict) else type(params).__name__}")
    if strategy in ("naive", "replay"):
        trainable = [f and not (mace and k in MACE_BUFFERS) for k, f in zip(keys, floating)]
        if not any(trainable):
            raise ValueError("the potential has no trainable floating-point parameters")
        return ParamSplit(treedef, keys, tuple(trainable))
    if strategy == "freeze":
        last = len(params["interactions"]) - 1
        prefixes = ["readouts/"]
        if freeze_trainable == "readouts+last_interaction":
            prefixes += [f"interactions/{last}/", f"products/{last}/"]
        trainable = [f and any(k.startswith(p) for p in prefixes) for k, f in zip(keys, floating)]
        return ParamSplit(treedef, keys, tuple(trainable))
    if strategy == "lora":
        patterns = [re.compile(LORA_PATTERNS[t]) for t in lora_targets]
        lora = tuple(k for (k, (_, v)) in zip(keys, flat)
                     if np.ndim(v) == 2 and any(p.match(k) for p in patterns))
        if not lora:
            raise ValueError(f"no weight matrix matches lora_targets {tuple(lora_targets)}")
        return ParamSplit(treedef, keys, (False,) * len(keys), lora, float(lora_alpha) / float(lora_rank))
    raise ValueError(f"unknown strategy {strategy!r}")


def partition(split: ParamSplit, params) -> tuple[dict, dict]:
    """(trainable, frozen) leaf dicts keyed by path."""
    leaves = jax.tree_util.tree_leaves(params)
    trainable = {k: v for k, t, v in zip(split.keys, split.trainable, leaves) if t}
    frozen = {k: v for k, t, v in zip(split.keys, split.trainable, leaves) if not t}
    return trainable, frozen


def init_lora(split: ParamSplit, params, rank: int, seed: int) -> dict:
    """Adapters {key: {"A": (mul_in, r) ~ N(0, 1), "B": (r, mul_out) zeros}} in the weights' dtype."""
    leaves = dict(zip(split.keys, jax.tree_util.tree_leaves(params)))
    rng = np.random.default_rng([int(seed), 11])
    out = {}
    for k in split.lora:
        w = leaves[k]
        a = rng.standard_normal((w.shape[0], rank))
        out[k] = {"A": jnp.asarray(a, w.dtype), "B": jnp.zeros((rank, w.shape[1]), w.dtype)}
    return out


def combine(split: ParamSplit, trainable: dict, frozen: dict) -> PyTree:
    """The full parameter pytree: the trainable leaves, the frozen ones, and for LoRA the adapters
    merged into their base weights, W + (alpha / r) A B (the model trained, evaluated and saved)."""
    leaves = []
    for k, t in zip(split.keys, split.trainable):
        if t:
            leaves.append(trainable[k])
        elif k in split.lora:
            ab = trainable[k]
            w = frozen[k]
            leaves.append(w + split.lora_scale * (ab["A"] @ ab["B"]).astype(w.dtype))
        else:
            leaves.append(frozen[k])
    return jax.tree_util.tree_unflatten(split.treedef, leaves)


def n_trainable(trainable: dict) -> int:
    return int(sum(np.size(v) for v in jax.tree_util.tree_leaves(trainable)))
