"""The model on structures outside the training loop: batched predictions, the least-squares E0
refit, and the labels of replay structures (pseudo-labels of the base model, or another functional's
energies moved onto the model's E0 reference).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np

from slhmc_jax.finetune import reference_energies as e0mod
from slhmc_jax.finetune.batching import StructureGraph
from slhmc_jax.finetune.context import (RunContext, RunData, build_context, cast_params, has_reference_energies,
                                        species_table, with_params)
from slhmc_jax.finetune.data import check_structures, read_structures
from slhmc_jax.finetune.settings import FinetuneSettings


# ----------------------------------------------------------------------------------------
# E0 refit and pseudo-labels


def with_refitted_e0(ctx: RunContext, params, graphs: Sequence[StructureGraph], name: str = "training"):
    """params with refitted E0 and the fit (least squares of E_target - E_model_without_E0)."""
    e0_old = np.asarray(params["atomic_energies"], np.float64)
    zeroed = dict(params)
    zeroed["atomic_energies"] = jnp.zeros_like(params["atomic_energies"])
    _, _, per = ctx.evaluate(zeroed, graphs, predictions=True)
    counts = e0mod.composition_matrix([g.species for g in graphs], len(e0_old))
    residual = np.array([g.structure.energy_eV for g in graphs]) - np.array([p[0] for p in per])
    fit = e0mod.fit_reference_energies(counts, residual, e0_old)
    table = species_table(ctx.potential)
    present = [z for z, c in zip(table.atomic_numbers, counts.any(axis=0)) if c] if table is not None else []
    e0mod.warn_if_rank_deficient(fit, present, name)
    new = dict(params)
    new["atomic_energies"] = jnp.asarray(fit.E0_eV, dtype=jnp.asarray(params["atomic_energies"]).dtype)
    return new, fit


def pseudo_label(ctx: RunContext, params, graphs: Sequence[StructureGraph]) -> list[StructureGraph]:
    _, _, per = ctx.evaluate(params, graphs, predictions=True)
    out = []
    for g, (e, f, s) in zip(graphs, per):
        st = g.structure.with_labels(float(e), np.asarray(f), np.asarray(s) if g.structure.periodic else None)
        out.append(dataclasses.replace(g, structure=st))
    return out


def rereference(ctx: RunContext, params, graphs: Sequence[StructureGraph]) -> list[StructureGraph]:
    """Replay labels of another functional on the model's E0 reference: E_b - C_b (E0_fit - E0_model),
    with E0_fit the least-squares E0 of the replay labels against the model (forces unchanged)."""
    e0_model = np.asarray(params["atomic_energies"], np.float64)
    _, fit = with_refitted_e0(ctx, params, graphs, "replay")
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
    if not has_reference_energies(potential):
        raise ValueError(f"{type(potential).__name__} has no per-element reference energies (params['atomic_energies'])")
    data = read_structures(structures, name="structures")
    check_structures(data, name="structures", species_table=species_table(potential))
    potential = cast_params(potential, settings.dtype)
    ctx = build_context(potential, RunData(data, [], []), dataclasses.replace(settings, strategy="naive", replay_fraction=0.0),
                          n_steps_per_epoch=1)
    params, _ = with_refitted_e0(ctx, potential.params, ctx.train)
    return with_params(potential, params)


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
    check_structures(data, name="structures", species_table=species_table(potential), need_energy=False)
    potential = cast_params(potential, settings.dtype)
    ctx = build_context(potential, RunData(data, [], []), dataclasses.replace(settings, strategy="naive", replay_fraction=0.0),
                          n_steps_per_epoch=1)
    ctx.spec = dataclasses.replace(ctx.spec, compute_stress=any(s.periodic for s in data))
    _, _, per = ctx.evaluate(potential.params, ctx.train, predictions=True)
    return [Prediction(float(e), f, st if s.periodic else None) for (e, f, st), s in zip(per, data)]


def prepare_labels(ctx: RunContext, potential, settings: FinetuneSettings):
    """(params with the refitted E0, the fit or None); replay labels made in ``ctx`` (pseudo-labels of
    the base model, or another functional's energies moved onto the model's E0 reference)."""
    params, e0_fit = potential.params, None
    if settings.refit_e0 and has_reference_energies(potential):
        params, e0_fit = with_refitted_e0(ctx, params, ctx.train)
    if ctx.replay:
        if settings.replay_labels == "base_model":
            ctx.replay = pseudo_label(ctx, params, ctx.replay)
        elif has_reference_energies(potential):
            ctx.replay = rereference(ctx, params, ctx.replay)
    return params, e0_fit
