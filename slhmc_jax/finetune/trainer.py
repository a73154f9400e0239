"""``finetune`` and ``refit_reference_energies``: the host-side loop around the pure steps.

Order of work in :func:`finetune` (everything that can fail on bad input happens before anything
is compiled):

1. read the data (ase.Atoms, extxyz, label store) and check it: non-empty sets, elements in the
   model's species table, finite labels, forces where the loss weights them; split off a validation
   set; check the strategy against the potential;
2. build the neighbour graphs and the static shape buckets;
3. refit the per-element E0 by least squares (:mod:`slhmc_jax.finetune.reference_energies`);
   pseudo-label the replay configurations with the frozen base model if asked;
4. train: for each epoch a seeded batch order, one jitted optimizer step per batch, validation with
   the EMA weights, early stopping, checkpoints, metrics files, progress bar;
5. return the best (or last) weights, LoRA adapters merged, as a potential of the same kind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax.finetune import checkpoint as ckpt
from slhmc_jax.finetune import history as hist
from slhmc_jax.finetune import reference_energies as e0mod
from slhmc_jax.finetune import strategies
from slhmc_jax.finetune.batching import Buckets, StructureGraph, assemble, build_graphs, epoch_batches, plan_buckets
from slhmc_jax.finetune.data import LabelledStructure, check_structures, fingerprint, read_structures, split_validation
from slhmc_jax.finetune.loss import LossConfig
from slhmc_jax.finetune.model import as_model
from slhmc_jax.finetune.optim import OptimizerConfig, current_learning_rate
from slhmc_jax.finetune.settings import FinetuneSettings
from slhmc_jax.finetune.step import StepSpec, TrainState, accumulate, combine, init_state, make_eval_step, make_train_step


@dataclasses.dataclass(frozen=True)
class FinetuneResult:
    """What :func:`finetune` returns.

    Attributes:
        potential: the trained model, a Potential of the input's kind (LoRA adapters merged; the EMA
            weights of the best validation epoch with ``restore_best``).
        history: per-epoch metrics; entry 0 is the model before training.
        best_epoch: epoch with the lowest validation loss (0: training never improved on the start).
        stopped: "completed", "early_stopping", "max_steps" (the last weights are returned, and a call
            with ``resume=True`` continues) or "diverged" (a non-finite loss; the best weights are returned).
        steps: optimizer updates done (in total, over resumed runs).
        compiled_shapes: distinct batch shapes the train step ran on (<= n_buckets).
        n_trainable: number of trained scalars (for LoRA: adapter entries).
        trained: the trained leaves by pytree path as returned (LoRA: the adapters
            {path: {"A": (mul_in, r), "B": (r, mul_out)}}, already merged into ``potential``).
        reference_energies_eV: the refitted per-element E0 (species-table order), or None.
        settings: the settings used.
    """

    potential: Any
    history: tuple[hist.EpochMetrics, ...]
    best_epoch: int
    stopped: str
    steps: int
    compiled_shapes: int
    n_trainable: int
    trained: dict
    reference_energies_eV: tuple[float, ...] | None
    settings: FinetuneSettings


# ----------------------------------------------------------------------------------------
# boundary: data, checks, potential capabilities (no compilation)


def _species_table(potential):
    table = getattr(potential, "species_table", None)
    if table is None and getattr(potential, "atomic_numbers", None) is not None:
        from slhmc_jax.models.registry import SpeciesTable

        table = SpeciesTable(tuple(potential.atomic_numbers))
    return table


def _has_reference_energies(potential) -> bool:
    p = getattr(potential, "params", None)
    return isinstance(p, dict) and "atomic_energies" in p and np.ndim(p["atomic_energies"]) == 1


def _with_params(potential, params):
    if hasattr(potential, "with_params"):
        return potential.with_params(params)
    if dataclasses.is_dataclass(potential):
        return dataclasses.replace(potential, params=params)
    raise ValueError(f"cannot rebuild a {type(potential).__name__} with new parameters (give it with_params or make it a dataclass)")


def _cast(potential, dtype_name):
    """The potential with floating parameters in ``dtype_name`` (None: as they are), all strongly typed
    device arrays (a weakly typed leaf, e.g. ``jnp.asarray(0.01)``, would compile the steps twice:
    the optimizer's outputs are strongly typed)."""
    def cast(p):
        p = jnp.asarray(p)
        target = jnp.dtype(dtype_name) if (dtype_name is not None and jnp.issubdtype(p.dtype, jnp.floating)) else p.dtype
        if p.dtype == target and not p.weak_type:
            return p
        return jax.device_put(np.asarray(p, dtype=target))  # a host copy: strongly typed, nothing compiled

    return _with_params(potential, jax.tree.map(cast, potential.params))


def _param_dtype(params):
    for leaf in jax.tree_util.tree_leaves(params):
        if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating):
            return np.dtype(jnp.asarray(leaf).dtype)
    return np.dtype(np.float64)


@dataclasses.dataclass
class _Data:
    train: list[LabelledStructure]
    valid: list[LabelledStructure]
    replay: list[LabelledStructure]


def _load_and_check(potential, train, valid, replay, settings: FinetuneSettings) -> _Data:
    """Read and check every set (host only). Raises ValueError on any bad input."""
    if potential is None or not hasattr(potential, "energy") or not hasattr(potential, "params"):
        raise ValueError(f"potential must follow the Potential protocol (params, cutoff, atomic_numbers, energy); "
                         f"got {type(potential).__name__}")
    if potential.params is None or not jax.tree_util.tree_leaves(potential.params):
        raise ValueError(f"{type(potential).__name__} has no parameters to fine-tune")
    if not (hasattr(potential, "with_params") or dataclasses.is_dataclass(potential)):
        raise ValueError(f"cannot rebuild a {type(potential).__name__} with new parameters (give it with_params or make it a dataclass)")
    table = _species_table(potential)
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
    return _Data(train_s, valid_s, replay_s)


# ----------------------------------------------------------------------------------------
# the run context: graphs, buckets, spec, compiled steps


@dataclasses.dataclass
class _Context:
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
        for chunk in _eval_chunks(graphs, self.buckets.batch_size, self.buckets.exact_atoms):
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


def _context(potential, data: _Data, settings: FinetuneSettings, *, n_steps_per_epoch=None) -> _Context:
    table = _species_table(potential)
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
        plans = [_epoch_plan(settings, train_g, per_batch, len(replay_g), e, model.exact_atoms)
                 for e in range(1, settings.epochs + 1)]
        n_steps_per_epoch = len(plans[0])
        train_batches = [[train_g[i] for i in t] + [replay_g[i] for i in r] for plan in plans for t, r in plan]
        eval_batches = [[gs[i] for i in chunk] for gs in (train_g, valid_g, replay_g)
                        for chunk in _eval_chunks(gs, settings.batch_size, model.exact_atoms)]
    buckets = plan_buckets(everything, settings.batch_size, settings.n_buckets, layout, exact_atoms=model.exact_atoms,
                           train_batches=train_batches, eval_batches=eval_batches)
    has_stress = any(g.structure.stress_eV_A3 is not None and g.structure.periodic for g in everything)
    pseudo_stress = settings.replay_labels == "base_model" and any(g.structure.periodic for g in replay_g)
    spec = StepSpec(model=model, split=split, loss=LossConfig.from_settings(settings),
                    optimizer=OptimizerConfig.from_settings(settings, n_steps_per_epoch), layout=layout,
                    compute_stress=bool(settings.stress_weight > 0 or has_stress or pseudo_stress))
    return _Context(potential, settings, _param_dtype(potential.params), train_g, valid_g, replay_g, buckets, spec, split)


def _eval_chunks(graphs: Sequence[StructureGraph], b: int, exact_atoms: bool) -> list[list[int]]:
    """Indices of evaluation batches: structures sorted by size, ``b`` at a time (one atom count per
    batch where atoms cannot be padded)."""
    order = sorted(range(len(graphs)), key=lambda k: (graphs[k].n_atoms, graphs[k].n_edges))
    chunks: list[list[int]] = []
    for k in order:
        if not chunks or len(chunks[-1]) == b or (exact_atoms and graphs[k].n_atoms != graphs[chunks[-1][0]].n_atoms):
            chunks.append([])
        chunks[-1].append(k)
    return chunks


def _epoch_plan(settings, train_g, per_batch, n_replay, epoch, exact_atoms):
    """The epoch's (train indices, replay indices) batches; potentials that cannot pad atoms batch
    structures of one atom count together."""
    groups = np.array([g.n_atoms for g in train_g]) if exact_atoms else None
    return epoch_batches(len(train_g), settings.batch_size, settings.seed, epoch, n_replay=n_replay,
                         replay_per_batch=settings.batch_size - per_batch, groups=groups)


# ----------------------------------------------------------------------------------------
# E0 refit and pseudo-labels


def _refit(ctx: _Context, params, graphs: Sequence[StructureGraph], name: str = "training"):
    """params with refitted E0 and the fit (least squares of E_target - E_model_without_E0)."""
    e0_old = np.asarray(params["atomic_energies"], np.float64)
    zeroed = dict(params)
    zeroed["atomic_energies"] = jnp.zeros_like(params["atomic_energies"])
    _, _, per = ctx.evaluate(zeroed, graphs, predictions=True)
    counts = e0mod.composition_matrix([g.species for g in graphs], len(e0_old))
    residual = np.array([g.structure.energy_eV for g in graphs]) - np.array([p[0] for p in per])
    fit = e0mod.fit_reference_energies(counts, residual, e0_old)
    table = _species_table(ctx.potential)
    present = [z for z, c in zip(table.atomic_numbers, counts.any(axis=0)) if c] if table is not None else []
    e0mod.warn_if_rank_deficient(fit, present, name)
    new = dict(params)
    new["atomic_energies"] = jnp.asarray(fit.E0_eV, dtype=jnp.asarray(params["atomic_energies"]).dtype)
    return new, fit


def _pseudo_label(ctx: _Context, params, graphs: Sequence[StructureGraph]) -> list[StructureGraph]:
    _, _, per = ctx.evaluate(params, graphs, predictions=True)
    out = []
    for g, (e, f, s) in zip(graphs, per):
        st = g.structure.with_labels(float(e), np.asarray(f), np.asarray(s) if g.structure.periodic else None)
        out.append(dataclasses.replace(g, structure=st))
    return out


def _rereference(ctx: _Context, params, graphs: Sequence[StructureGraph]) -> list[StructureGraph]:
    """Replay labels of another functional on the model's E0 reference: E_b - C_b (E0_fit - E0_model),
    with E0_fit the least-squares E0 of the replay labels against the model (forces unchanged)."""
    e0_model = np.asarray(params["atomic_energies"], np.float64)
    _, fit = _refit(ctx, params, graphs, "replay")
    counts = e0mod.composition_matrix([g.species for g in graphs], len(e0_model))
    shift = counts @ (fit.E0_eV - e0_model)
    return [dataclasses.replace(g, structure=g.structure.with_labels(g.structure.energy_eV - float(d), g.structure.forces_eV_A,
                                                                    g.structure.stress_eV_A3))
            for g, d in zip(graphs, shift)]


def refit_reference_energies(potential, structures, *, settings: FinetuneSettings | None = None):
    """The potential with its per-element E0 refitted by least squares to ``structures``' energies.

    Solves min_E0 || C E0 - (E_target - E_model_without_E0) ||^2 over the structures' compositions C;
    on rank-deficient data the least-squares solution closest to the current E0 (see
    :mod:`slhmc_jax.finetune.reference_energies`, which also warns). Only potentials whose
    parameters hold per-element ``atomic_energies`` (MACE) have E0 to refit.

    Args:
        potential: e.g. a MACEPotential.
        structures: labelled structures (list of ase.Atoms, extxyz path or label-store path).
        settings: batching settings for the evaluation (default FinetuneSettings()).
    """
    settings = FinetuneSettings() if settings is None else settings
    if not _has_reference_energies(potential):
        raise ValueError(f"{type(potential).__name__} has no per-element reference energies (params['atomic_energies'])")
    data = read_structures(structures, name="structures")
    check_structures(data, name="structures", species_table=_species_table(potential))
    potential = _cast(potential, settings.dtype)
    ctx = _context(potential, _Data(data, [], []), dataclasses.replace(settings, strategy="naive", replay_fraction=0.0),
                   n_steps_per_epoch=1)
    params, _ = _refit(ctx, potential.params, ctx.train)
    return _with_params(potential, params)


class Prediction(NamedTuple):
    """A model's prediction for one structure: energy eV, forces (n, 3) eV/A, stress (3, 3) eV/A^3
    (None for non-periodic structures)."""

    energy_eV: float
    forces_eV_A: np.ndarray
    stress_eV_A3: np.ndarray | None


def predict(potential, structures, *, settings: FinetuneSettings | None = None) -> list[Prediction]:
    """Energies, forces and stress of ``structures`` (labels not needed) in the padded batches that
    fine-tuning evaluates with (``settings.batch_size`` structures per batch, one compiled shape).

    Args:
        potential: any Potential.
        structures: list of ase.Atoms / LabelledStructure, an extxyz path or a label-store path.
        settings: batching settings (default FinetuneSettings()).
    """
    settings = FinetuneSettings() if settings is None else settings
    data = read_structures(structures, name="structures")
    check_structures(data, name="structures", species_table=_species_table(potential), need_energy=False)
    potential = _cast(potential, settings.dtype)
    ctx = _context(potential, _Data(data, [], []), dataclasses.replace(settings, strategy="naive", replay_fraction=0.0),
                   n_steps_per_epoch=1)
    ctx.spec = dataclasses.replace(ctx.spec, compute_stress=any(s.periodic for s in data))
    _, _, per = ctx.evaluate(potential.params, ctx.train, predictions=True)
    return [Prediction(float(e), f, st if s.periodic else None) for (e, f, st), s in zip(per, data)]


# ----------------------------------------------------------------------------------------
# the loop


_TRAJECTORY_KEYS = ("output_dir", "resume", "max_steps", "progress", "plot", "checkpoint_every_steps")


def _run_fingerprint(settings, data: _Data, potential) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in settings.to_dict().items() if k not in _TRAJECTORY_KEYS}, sort_keys=True).encode())
    for s in (data.train, data.valid, data.replay):
        h.update(fingerprint(s).encode())
    for leaf in jax.tree_util.tree_leaves(potential.params):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()


def _progress(settings, total, initial):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=None if settings.progress else True, unit="step",
                desc="finetune", dynamic_ncols=True, leave=False)


def finetune(potential, train, valid=None, *, settings: FinetuneSettings = FinetuneSettings(), replay=None) -> FinetuneResult:
    """Fine-tune ``potential``'s parameters on labelled structures with optax.

    Args:
        potential: any Potential (MACE, a FlaxPotential, or a dataclass Potential with parameters).
        train: training structures: a list of ase.Atoms with energies and forces (stress optional)
            on a SinglePointCalculator or in ``info`` / ``arrays`` (REF_energy, REF_forces,
            REF_stress, or energy / forces / stress), an extxyz path, or a label-store path.
        valid: validation structures (same forms); None: ``settings.valid_fraction`` of ``train``.
        settings: :class:`FinetuneSettings`.
        replay: replay structures (same forms) for ``replay_fraction > 0``: a file of
            source-functional labels (energies re-referenced to the model's E0 by a per-element
            least-squares shift) or configurations to pseudo-label with the frozen base model
            (``replay_labels="base_model"``; e.g. the states the sampler visited).

    Returns:
        FinetuneResult (``.potential``, ``.history``, ...).

    Raises:
        ValueError: on bad data or settings, before anything is compiled.
    """
    if not isinstance(settings, FinetuneSettings):
        raise TypeError(f"settings must be a FinetuneSettings; got {type(settings).__name__}")
    data = _load_and_check(potential, train, valid, replay, settings)
    run_id = _run_fingerprint(settings, data, potential)
    potential = _cast(potential, settings.dtype)
    ctx = _context(potential, data, settings)
    spec, split = ctx.spec, ctx.split
    params = potential.params
    e0_fit = None
    if settings.refit_e0 and _has_reference_energies(potential):
        params, e0_fit = _refit(ctx, params, ctx.train)
    if ctx.replay:
        if settings.replay_labels == "base_model":
            ctx.replay = _pseudo_label(ctx, params, ctx.replay)
        elif _has_reference_energies(potential):
            ctx.replay = _rereference(ctx, params, ctx.replay)

    trainable, frozen = strategies.partition(split, params)
    if split.lora:
        trainable = strategies.init_lora(split, params, settings.lora_rank, settings.seed)
    state = init_state(spec, trainable)
    train_step = make_train_step(spec)
    replay_per_batch = int(round(settings.replay_fraction * settings.batch_size))
    per_batch = settings.batch_size - replay_per_batch

    loop = {"epoch": 0, "batch": 0, "best_loss": math.inf, "best_epoch": 0, "bad_epochs": 0, "acc": np.zeros(9),
            "acc_loss": 0.0, "acc_n": 0, "train_wall_s": 0.0, "wall_s": 0.0, "stopped": ""}
    history: list[hist.EpochMetrics] = []
    best = state.ema
    out_dir = settings.output_dir
    ck_path = None if out_dir is None else os.path.join(out_dir, ckpt.FILENAME)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)

    def snapshot():
        return {"id": run_id, "state": state, "frozen": frozen, "best": best,
                "loop": {k: (np.asarray(v) if k == "acc" else v) for k, v in loop.items()},
                "history": json.dumps(hist.to_jsonable(history))}

    resumed = False
    if settings.resume and ck_path is not None and os.path.exists(ck_path):
        restored = ckpt.load(ck_path, snapshot(), expect_id=run_id)
        state = jax.tree.map(jnp.asarray, restored["state"])
        state = TrainState(*state) if not isinstance(state, TrainState) else state
        frozen = jax.tree.map(jnp.asarray, restored["frozen"])
        best = jax.tree.map(jnp.asarray, restored["best"])
        loop = dict(restored["loop"])
        loop["acc"] = np.asarray(loop["acc"], np.float64)
        for key in ("epoch", "batch", "best_epoch", "bad_epochs", "acc_n"):
            loop[key] = int(loop[key])
        for key in ("best_loss", "acc_loss", "train_wall_s", "wall_s"):
            loop[key] = float(loop[key])
        if loop["stopped"] == "max_steps":
            loop["stopped"] = ""  # the interrupted run continues
        history = hist.from_jsonable(json.loads(restored["history"]))
        resumed = True

    def save_checkpoint():
        if ck_path is not None:
            ckpt.save(ck_path, snapshot())

    def validate():
        params_now = combine(split, state.ema, frozen)
        sums, value, _ = ctx.evaluate(params_now, ctx.valid)
        out = hist.metrics_from_sums("valid", sums, value)
        if ctx.replay:
            rs, rv, _ = ctx.evaluate(params_now, ctx.replay)
            out.update(hist.metrics_from_sums("replay", rs, rv))
        return out

    t_start = time.perf_counter() - loop["wall_s"]
    if not resumed or not history:
        row = hist.EpochMetrics(epoch=0, step=0, learning_rate=current_learning_rate(spec.optimizer, state.opt_state, 0),
                                wall_s=0.0, train_wall_s=0.0, structures_per_s=math.nan, **validate())
        history.append(row)
        loop["best_loss"] = row.valid_loss
    steps_per_epoch = spec.optimizer.steps_per_epoch
    total_steps = steps_per_epoch * settings.epochs
    shapes_used: set[int] = set()
    host_step = int(state.step)
    bar = _progress(settings, total_steps, host_step)
    try:
        while loop["epoch"] < settings.epochs and not loop["stopped"]:
            epoch = loop["epoch"] + 1
            plan = _epoch_plan(settings, ctx.train, per_batch, len(ctx.replay), epoch, ctx.buckets.exact_atoms)
            acc = jnp.asarray(loop["acc"], jnp.float64)
            acc_loss = jnp.asarray(loop["acc_loss"], jnp.float64)
            t0 = time.perf_counter()
            for b_idx in range(loop["batch"], len(plan)):
                if settings.max_steps and host_step >= settings.max_steps:
                    loop["stopped"] = "max_steps"
                    break
                tr, rp = plan[b_idx]
                graphs = [ctx.train[i] for i in tr] + [ctx.replay[i] for i in rp]
                level, batch = assemble(graphs, ctx.buckets, ctx.dtype)
                shapes_used.add(level)
                state, out = train_step(state, frozen, batch)
                acc, acc_loss = accumulate(acc, acc_loss, out, len(tr))
                loop["acc_n"] += len(tr)
                loop["batch"] = b_idx + 1
                bar.update(1)
                host_step += 1
                at_limit = bool(settings.max_steps) and host_step >= settings.max_steps
                if (settings.checkpoint_every_steps and host_step % settings.checkpoint_every_steps == 0) or at_limit:
                    jax.block_until_ready(state)
                    loop["train_wall_s"] += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    loop["acc"] = np.asarray(acc, np.float64)
                    loop["acc_loss"] = float(acc_loss)
                    loop["wall_s"] = time.perf_counter() - t_start
                    if at_limit and loop["batch"] < len(plan):
                        loop["stopped"] = "max_steps"
                        save_checkpoint()
                        break
                    save_checkpoint()
            if loop["stopped"]:
                break
            jax.block_until_ready(state)
            loop["train_wall_s"] += time.perf_counter() - t0
            train_m = hist.metrics_from_sums("train", np.asarray(acc, np.float64), float(acc_loss) / max(loop["acc_n"], 1))
            valid_m = validate()
            wall = time.perf_counter() - t_start
            row = hist.EpochMetrics(
                epoch=epoch, step=int(state.step), learning_rate=current_learning_rate(spec.optimizer, state.opt_state, int(state.step)),
                wall_s=wall, train_wall_s=loop["train_wall_s"],
                structures_per_s=loop["acc_n"] / loop["train_wall_s"] if loop["train_wall_s"] > 0 else math.nan,
                **train_m, **valid_m)
            history.append(row)
            bar.set_postfix(loss=f"{row.train_loss:.3g}", valid_F_rmse=f"{row.valid_forces_rmse_eV_A:.3g}")
            if row.valid_loss < loop["best_loss"]:
                loop["best_loss"], loop["best_epoch"], loop["bad_epochs"] = row.valid_loss, epoch, 0
                best = state.ema
            else:
                loop["bad_epochs"] += 1
            loop.update(epoch=epoch, batch=0, acc=np.zeros(9), acc_loss=0.0, acc_n=0, train_wall_s=0.0, wall_s=wall)
            if settings.early_stopping_patience and loop["bad_epochs"] >= settings.early_stopping_patience:
                loop["stopped"] = "early_stopping"
            if not math.isfinite(row.train_loss) or not math.isfinite(row.valid_loss):
                loop["stopped"] = "diverged"  # NaN / inf loss: keep the best finite weights
            if settings.max_steps and int(state.step) >= settings.max_steps and loop["epoch"] < settings.epochs:
                loop["stopped"] = loop["stopped"] or "max_steps"
            save_checkpoint()
            if out_dir is not None:
                hist.write(history, out_dir, plot=False)
    finally:
        bar.close()
    stopped = loop["stopped"] or "completed"
    if out_dir is not None:
        hist.write(history, out_dir, plot=settings.plot)
    final = best if (stopped == "diverged" or (settings.restore_best and stopped != "max_steps")) else state.ema
    out_params = strategies.combine(split, final, frozen)
    return FinetuneResult(
        potential=_with_params(potential, out_params),
        history=tuple(history),
        best_epoch=int(loop["best_epoch"]),
        stopped=stopped,
        steps=int(state.step),
        compiled_shapes=len(shapes_used),
        n_trainable=strategies.n_trainable(state.trainable),
        trained=final,
        reference_energies_eV=None if e0_fit is None else tuple(float(v) for v in e0_fit.E0_eV),
        settings=settings,
    )
