"""The run context of fine-tuning: checked data, neighbour graphs, shape buckets, the step spec.

Host-side and compile-free up to the evaluation: :func:`load_and_check` reads and checks every set
(before anything is compiled), :func:`build_context` builds the graphs, the static shape buckets and
the :class:`~slhmc_jax.finetune.step.StepSpec`, and :meth:`RunContext.evaluate` runs the eval step
over a set in batches of the top bucket. Also the potential's capabilities that fine-tuning reads
(species table, per-element E0, rebuilding with new parameters, casting).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax.finetune import strategies
from slhmc_jax.finetune.batching import Buckets, StructureGraph, assemble, build_graphs, epoch_batches, plan_buckets
from slhmc_jax.finetune.data import LabelledStructure, check_structures, read_structures, split_validation
from slhmc_jax.finetune.model import as_model
from slhmc_jax.finetune.optim import OptimizerConfig
from slhmc_jax.finetune.settings import FinetuneSettings, LossSettings
from slhmc_jax.finetune.step import StepSpec, make_eval_step


# ----------------------------------------------------------------------------------------
# boundary: data, checks, potential capabilities (no compilation)


def species_table(potential):
    """The potential's SpeciesTable (from ``species_table`` or ``atomic_numbers``), or None."""
    table = getattr(potential, "species_table", None)
    if table is None and getattr(potential, "atomic_numbers", None) is not None:
        from slhmc_jax.models.flax_potential import SpeciesTable

        table = SpeciesTable(tuple(potential.atomic_numbers))
    return table


def has_reference_energies(potential) -> bool:
    """True when the parameters hold per-element E0 (``params["atomic_energies"]``, (n_species,) eV)."""
    p = getattr(potential, "params", None)
    return isinstance(p, dict) and "atomic_energies" in p and np.ndim(p["atomic_energies"]) == 1


def with_params(potential, params):
    """The same kind of potential with ``params`` (its ``with_params``, or a dataclass replace)."""
    if hasattr(potential, "with_params"):
        return potential.with_params(params)
    if dataclasses.is_dataclass(potential):
        return dataclasses.replace(potential, params=params)
    raise ValueError(f"cannot rebuild a {type(potential).__name__} with new parameters (give it with_params or make it a dataclass)")


def cast_params(potential, dtype_name):
    """The potential with floating parameters in ``dtype_name`` (None: as they are), all strongly typed
    device arrays (a weakly typed leaf, e.g. ``jnp.asarray(0.01)``, would compile the steps twice:
    the optimizer's outputs are strongly typed)."""
    def cast(p):
        p = jnp.asarray(p)
        target = jnp.dtype(dtype_name) if (dtype_name is not None and jnp.issubdtype(p.dtype, jnp.floating)) else p.dtype
        if p.dtype == target and not p.weak_type:
            return p
        return jax.device_put(np.asarray(p, dtype=target))  # a host copy: strongly typed, nothing compiled

    return with_params(potential, jax.tree.map(cast, potential.params))


def param_dtype(params):
    """The dtype of the first floating leaf (float64 if there is none)."""
    for leaf in jax.tree_util.tree_leaves(params):
        if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating):
            return np.dtype(jnp.asarray(leaf).dtype)
    return np.dtype(np.float64)


@dataclasses.dataclass
class RunData:
    """The checked structures of a run: training, validation and replay sets."""

    train: list[LabelledStructure]
    valid: list[LabelledStructure]
    replay: list[LabelledStructure]


def load_and_check(potential, train, valid, replay, settings: FinetuneSettings) -> RunData:
    """Read and check every set (host only). Raises ValueError on any bad input."""
    if potential is None or not hasattr(potential, "energy") or not hasattr(potential, "params"):
        raise ValueError(f"potential must follow the Potential protocol (params, cutoff, atomic_numbers, energy); "
                         f"got {type(potential).__name__}")
    if potential.params is None or not jax.tree_util.tree_leaves(potential.params):
        raise ValueError(f"{type(potential).__name__} has no parameters to fine-tune")
    if not (hasattr(potential, "with_params") or dataclasses.is_dataclass(potential)):
        raise ValueError(f"cannot rebuild a {type(potential).__name__} with new parameters (give it with_params or make it a dataclass)")
    table = species_table(potential)
    need = dict(need_forces=settings.forces_weight > 0, need_stress=settings.stress_weight > 0)
    train_s = read_structures(train, name="train")
    check_structures(train_s, name="train", species_table=table, **need)
    if valid is None:
        train_s, valid_s = split_validation(train_s, settings.valid_fraction, settings.seed)
    else:
        valid_s = read_structures(valid, name="valid")
        check_structures(valid_s, name="valid", species_table=table, **need)
    use_replay = settings.replay_fraction > 0
    if replay is not None and not use_replay:
        raise ValueError("replay data given but FinetuneSettings.replay_fraction is 0 (set it, or strategy='replay')")
    replay_s: list[LabelledStructure] = []
    if use_replay:
        if replay is None:
            raise ValueError(f"FinetuneSettings.replay_fraction={settings.replay_fraction} needs replay data (replay=...)")
        replay_s = read_structures(replay, name="replay")
        pseudo = settings.replay_labels == "base_model"
        check_structures(replay_s, name="replay", species_table=table, need_energy=not pseudo,
                         need_forces=need["need_forces"] and not pseudo, need_stress=need["need_stress"] and not pseudo)
        n_r = int(round(settings.replay_fraction * settings.batch_size))
        if len(replay_s) < n_r:
            raise ValueError(f"replay set has {len(replay_s)} structures; each batch draws {n_r}")
    # strategy against the parameter layout (raises for freeze / lora without the MACE layout)
    strategies.make_split(potential.params, settings.strategy, freeze_trainable=settings.freeze_trainable,
                          lora_targets=settings.lora_targets, lora_rank=settings.lora_rank, lora_alpha=settings.lora_alpha)
    return RunData(train_s, valid_s, replay_s)


# ----------------------------------------------------------------------------------------
# the run context: graphs, buckets, spec, batched evaluation


@dataclasses.dataclass
class RunContext:
    """A run's static parts: the (cast) potential, settings, parameter dtype, neighbour graphs of each
    set, shape buckets, step spec and parameter split."""

    potential: Any
    settings: FinetuneSettings
    dtype: np.dtype
    train: list[StructureGraph]
    valid: list[StructureGraph]
    replay: list[StructureGraph]
    buckets: Buckets
    spec: StepSpec
    split: strategies.ParamSplit

    def eval_batches(self, graphs: Sequence[StructureGraph]):
        """Sequential batches (sorted by size), all in the top bucket: one compiled eval shape.
        Yields (indices, batch)."""
        for chunk in eval_chunks(graphs, self.buckets.batch_size, self.buckets.exact_atoms):
            yield chunk, assemble([graphs[i] for i in chunk], self.buckets, self.dtype, level=-1)[1]

    def evaluate(self, params, graphs, *, predictions: bool = False):
        """(summed ErrorSums (9,), mean batch loss weighted by graphs, per-structure (E, F, sigma) or None)
        of the full parameters ``params``."""
        if not graphs:
            return None, math.nan, None
        eval_step = make_eval_step(self.spec)
        sums = np.zeros(9)
        loss_sum = 0.0
        n = 0
        per = [None] * len(graphs) if predictions else None
        for idx, batch in self.eval_batches(graphs):
            pred, s, value = eval_step(params, batch)
            sums += np.array([float(v) for v in s])
            loss_sum += float(value) * len(idx)
            n += len(idx)
            if predictions:
                e = np.asarray(pred.energy, np.float64)
                f = np.asarray(pred.forces, np.float64)
                st = np.asarray(pred.stress, np.float64)
                if self.buckets.layout == "flat":
                    offsets = np.concatenate([[0], np.cumsum([graphs[i].n_atoms for i in idx])])
                    for slot, i in enumerate(idx):
                        per[i] = (e[slot], f[offsets[slot]:offsets[slot + 1]], st[slot])
                else:
                    n_pad = batch.positions.shape[1]
                    for slot, i in enumerate(idx):
                        per[i] = (e[slot], f[slot * n_pad:slot * n_pad + graphs[i].n_atoms], st[slot])
        return sums, loss_sum / max(n, 1), per


def build_context(potential, data: RunData, settings: FinetuneSettings, *, n_steps_per_epoch=None) -> RunContext:
    """The run context of ``data``: neighbour graphs, shape buckets (sized from the run's own batches
    when ``n_steps_per_epoch`` is None, i.e. for training), the model and the step spec (the loss and
    optimizer views of ``settings``). Host work only; nothing is compiled."""
    table = species_table(potential)
    lookup = None if table is None else table.lookup
    cutoff = potential.cutoff
    train_g = build_graphs(data.train, lookup, cutoff)
    valid_g = build_graphs(data.valid, lookup, cutoff)
    replay_g = build_graphs(data.replay, lookup, cutoff, is_target=False)
    everything = train_g + valid_g + replay_g
    k_max = max((g.max_in_degree() for g in everything), default=0)
    model = as_model(potential, k_max if (k_max > 0 and settings.edge_slots) else None)
    layout = "vmap" if model.exact_atoms else settings.batch_layout
    if model.exact_atoms and settings.replay_fraction > 0:
        raise ValueError(f"replay batches mix structure sizes; {type(potential).__name__} is not a FlaxPotential and "
                         f"cannot pad atoms")
    split = strategies.make_split(potential.params, settings.strategy, freeze_trainable=settings.freeze_trainable,
                                  lora_targets=settings.lora_targets, lora_rank=settings.lora_rank, lora_alpha=settings.lora_alpha)
    per_batch = settings.batch_size - int(round(settings.replay_fraction * settings.batch_size))
    train_batches = eval_batches = None
    if n_steps_per_epoch is None:  # a training run: size the buckets from its own batches
        plans = [epoch_plan(settings, train_g, per_batch, len(replay_g), e, model.exact_atoms)
                 for e in range(1, settings.epochs + 1)]
        n_steps_per_epoch = len(plans[0])
        train_batches = [[train_g[i] for i in t] + [replay_g[i] for i in r] for plan in plans for t, r in plan]
        eval_batches = [[gs[i] for i in chunk] for gs in (train_g, valid_g, replay_g)
                        for chunk in eval_chunks(gs, settings.batch_size, model.exact_atoms)]
    buckets = plan_buckets(everything, settings.batch_size, settings.n_buckets, layout, exact_atoms=model.exact_atoms,
                           train_batches=train_batches, eval_batches=eval_batches)
    has_stress = any(g.structure.stress_eV_A3 is not None and g.structure.periodic for g in everything)
    pseudo_stress = settings.replay_labels == "base_model" and any(g.structure.periodic for g in replay_g)
    spec = StepSpec(model=model, split=split, loss=LossSettings.of(settings),
                    optimizer=OptimizerConfig.from_settings(settings, n_steps_per_epoch), layout=layout,
                    compute_stress=bool(settings.stress_weight > 0 or has_stress or pseudo_stress))
    return RunContext(potential, settings, param_dtype(potential.params), train_g, valid_g, replay_g, buckets, spec, split)


def eval_chunks(graphs: Sequence[StructureGraph], b: int, exact_atoms: bool) -> list[list[int]]:
    """Indices of evaluation batches: structures sorted by size, ``b`` at a time (one atom count per
    batch where atoms cannot be padded)."""
    order = sorted(range(len(graphs)), key=lambda k: (graphs[k].n_atoms, graphs[k].n_edges))
    chunks: list[list[int]] = []
    for k in order:
        if not chunks or len(chunks[-1]) == b or (exact_atoms and graphs[k].n_atoms != graphs[chunks[-1][0]].n_atoms):
            chunks.append([])
        chunks[-1].append(k)
    return chunks


def epoch_plan(settings, train_g, per_batch, n_replay, epoch, exact_atoms):
    """The epoch's (train indices, replay indices) batches; potentials that cannot pad atoms batch
    structures of one atom count together."""
    groups = np.array([g.n_atoms for g in train_g]) if exact_atoms else None
    return epoch_batches(len(train_g), settings.batch_size, settings.seed, epoch, n_replay=n_replay,
                         replay_per_batch=settings.batch_size - per_batch, groups=groups)
