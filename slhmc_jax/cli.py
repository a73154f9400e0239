"""Command line: ``slhmc run --quickstart`` (a short SLHMC run with real PySCF acceptance) and
``slhmc neighbours`` (neighbour statistics of a rutile supercell); ``slhmc finetune`` (optax
fine-tuning of a MACE model on labelled structures, settings from a TOML file and flags)."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _water_proposal():
    """A harmonic valence model of H2O (O-H bonds and H-O-H angle) as the proposal Potential.

    E = sum_bonds k_r/2 (r - r0)^2 + k_theta/2 (theta - theta0)^2, with r0 = 1.02 A,
    k_r = 45 eV/A^2, theta0 = 97 deg, k_theta = 4 eV/rad^2 (near PBE/STO-3G; only the
    acceptance rate depends on how near: the chain is exact either way).
    """
    import jax.numpy as jnp

    from slhmc_jax.models import FunctionPotential

    r0, k_r, theta0, k_theta = 1.02, 45.0, np.deg2rad(97.0), 4.0

    def energy(positions, cell, numbers):
        d1, d2 = positions[1] - positions[0], positions[2] - positions[0]
        r1, r2 = jnp.linalg.norm(d1), jnp.linalg.norm(d2)
        cos = jnp.dot(d1, d2) / (r1 * r2)
        theta = jnp.arccos(jnp.clip(cos, -1 + 1e-12, 1 - 1e-12))
        return 0.5 * k_r * ((r1 - r0) ** 2 + (r2 - r0) ** 2) + 0.5 * k_theta * (theta - theta0) ** 2

    return FunctionPotential(energy, cutoff=None)


def run_quickstart(args) -> int:
    from ase.build import molecule

    import slhmc_jax
    from slhmc_jax.targets import PySCFTarget

    atoms = molecule("H2O")
    target = PySCFTarget.preset("pbe", basis="sto-3g", grids_level=0, conv_tol=1e-8)
    proposal = _water_proposal()
    print(f"SLHMC quickstart: H2O, target PBE/STO-3G (PySCF), proposal harmonic valence model, "
          f"{args.chains} chains x {args.steps} steps at {args.temperature_K} K")
    import tempfile

    from slhmc_jax.store import LabelStore

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = LabelStore(args.store or f"{tmp}/labels.sqlite")
        result = slhmc_jax.sample(
            atoms, proposal, target, temperature_K=args.temperature_K, n_chains=args.chains, n_steps=args.steps,
            trajectory_steps=10, timestep_fs=0.25, seed=args.seed, checkpoint=args.checkpoint, store=store)
        n_rows = len(store)
    wall = time.perf_counter() - start
    d = result.diagnostics
    rate = np.asarray(result.acceptance_rate)
    r = np.linalg.norm(result.positions[:, :, 1:, :] - result.positions[:, :, :1, :], axis=-1)
    print(f"acceptance rate per chain: {np.round(rate, 3).tolist()} (pooled {rate.mean():.3f})")
    print(f"DFT calls: {d.n_target_calls} ({d.n_judged} configurations judged: 1 start structure, "
          f"{d.burn_in_steps} burn-in and {args.steps} recorded steps x {args.chains} chains; "
          f"{d.n_from_store} answered from the store); label store rows: {n_rows}; wall time {wall:.1f} s")
    print(f"mean O-H distance {r.mean():.4f} A; mean target energy {result.target_energies.mean():.4f} eV")
    name, stats = result.structural_statistics()
    energy = d.mcmc.observables["target_energy_eV"]
    if stats is not None and energy is not None:
        print(f"ESS (R-hat): {name} {stats.ess:.1f} ({stats.rhat:.3f}), target energy {energy.ess:.1f} ({energy.rhat:.3f})")
    return 0


def run_neighbours(args) -> int:
    from slhmc_jax.neighbours import neighbour_pairs
    from slhmc_jax.structures import rutile

    atoms = rutile(repeat=tuple(args.repeat))
    i, j, S = neighbour_pairs(atoms, args.cutoff)
    counts = np.bincount(i, minlength=len(atoms))
    print(f"rutile TiO2 {tuple(args.repeat)}: {len(atoms)} atoms, cutoff {args.cutoff} A: {len(i)} pairs, "
          f"neighbours per atom {counts.min()}-{counts.max()}, max image shift {np.abs(S).max(axis=0).tolist()}")
    return 0


def add_finetune_parser(sub) -> None:
    """``slhmc finetune``: the settings are FinetuneSettings fields, from --config (TOML) then the flags."""
    from slhmc_jax.finetune.settings import STRATEGIES

    ft = sub.add_parser("finetune", help="fine-tune a MACE model on labelled structures (optax)")
    ft.add_argument("--data", required=True, help="training labels: extxyz (any ASE format) or a label store (SQLite)")
    ft.add_argument("--model", required=True, help="base model: mace-torch .model or this package's .npz")
    ft.add_argument("--out", required=True, help="fine-tuned model: .model/.pt (mace-torch, LoRA merged) or .npz")
    ft.add_argument("--valid", default=None, help="validation labels (default: valid_fraction of --data)")
    ft.add_argument("--replay", default=None, help="replay structures (needs replay_fraction > 0)")
    ft.add_argument("--config", default=None, help="TOML file: FinetuneSettings keys, top level or in [finetune]")
    ft.add_argument("--strategy", choices=STRATEGIES, default=None)
    ft.add_argument("--epochs", type=int, default=None)
    ft.add_argument("--batch-size", dest="batch_size", type=int, default=None)
    ft.add_argument("--learning-rate", dest="learning_rate", type=float, default=None)
    ft.add_argument("--seed", type=int, default=None)
    ft.add_argument("--dtype", choices=("float32", "float64"), default=None)
    ft.add_argument("--output-dir", dest="output_dir", default=None, help="checkpoints, metrics.csv/json, learning_curve.png")
    ft.add_argument("--resume", action="store_true", default=None, help="continue from --output-dir's checkpoint")
    ft.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="any other setting, value in TOML syntax (e.g. --set lora_rank=8 --set 'loss=\"huber\"')")


def run_finetune(args) -> int:
    import os
    import tomllib

    from slhmc_jax import finetune
    from slhmc_jax.models import mace

    try:
        values = {}
        if args.config is not None:
            values = finetune.FinetuneSettings.from_toml(args.config).to_dict()
        for item in args.overrides:
            key, sep, text = item.partition("=")
            if not sep:
                raise ValueError(f"--set needs KEY=VALUE; got {item!r}")
            try:
                values[key.strip()] = tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError:
                values[key.strip()] = text  # a bare string
        for key in ("strategy", "epochs", "batch_size", "learning_rate", "seed", "dtype", "output_dir", "resume"):
            if getattr(args, key) is not None:
                values[key] = getattr(args, key)
        settings = finetune.FinetuneSettings.from_mapping(values)
        potential = mace.load(args.model)
        start = time.perf_counter()
        result = finetune.finetune(potential, args.data, args.valid, settings=settings, replay=args.replay)
        out = os.fspath(args.out)
        if out.endswith((".model", ".pt", ".pth")):
            mace.save_torch(result.potential, out)
        else:
            mace.save(result.potential, out)
    except (ValueError, FileNotFoundError) as err:
        print(f"slhmc finetune: error: {err}", file=sys.stderr)
        return 2
    first, last = result.history[0], result.history[-1]
    print(f"fine-tuned {len(result.history) - 1} epochs ({result.steps} steps, {result.stopped}) in "
          f"{time.perf_counter() - start:.1f} s; validation force RMSE {first.valid_forces_rmse_eV_A:.4g} -> "
          f"{last.valid_forces_rmse_eV_A:.4g} eV/A, energy RMSE {first.valid_energy_rmse_eV_atom:.4g} -> "
          f"{last.valid_energy_rmse_eV_atom:.4g} eV/atom; best epoch {result.best_epoch}; wrote {out}")
    return 0


def add_analyze_parser(sub) -> None:
    """``slhmc analyze RUN_DIR`` or ``slhmc analyze TRAJECTORY --reference REF``: report.json, report.md, figures."""
    an = sub.add_parser("analyze", help="report (JSON, markdown, PNG figures) of a run directory, or of a trajectory "
                                        "against a reference trajectory")
    an.add_argument("path", help="a run directory, or a trajectory file (extxyz or anything ASE reads) with --reference")
    an.add_argument("--reference", default=None, help="reference trajectory (the target distribution) to compare PATH with")
    an.add_argument("--out", default=None, help="output directory (default: the run directory; for a trajectory, "
                                                 "PATH without its suffix + '_report')")
    an.add_argument("--pair", dest="pairs", nargs=2, action="append", metavar=("A", "B"), default=None,
                    help="element pair for RDFs and nearest-neighbour distances, e.g. --pair Ti O (repeatable)")
    an.add_argument("--k", type=int, default=None, help="nearest neighbours per atom (default 6 where periodic)")
    an.add_argument("--r-max-A", dest="r_max_A", type=float, default=None, help="RDF range, Angstrom (default 6 where periodic)")
    an.add_argument("--bins", type=int, default=200, help="RDF bins")
    an.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates per interval")
    an.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")


def run_analyze(args) -> int:
    from pathlib import Path

    from slhmc_jax import report

    settings = report.ReportSettings(
        pairs=tuple(tuple(p) for p in args.pairs) if args.pairs else None, k=args.k, r_max_A=args.r_max_A,
        n_bins=args.bins, n_bootstrap=args.bootstrap, seed=args.seed,
    )
    path = Path(args.path)
    try:
        if args.reference is not None:
            out = Path(args.out) if args.out else path.with_name(path.stem + "_report")
            files = report.compare_trajectories(path, args.reference, out, settings)
        elif path.is_dir():
            files = report.report_run_directory(path, args.out, settings)
        else:
            raise ValueError(f"{path} is not a run directory; to compare a trajectory file, give --reference REF")
    except ValueError as err:
        print(f"slhmc analyze: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {files.json}, {files.markdown} and {len(files.figures)} figures in {files.json.parent / 'figures'}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="slhmc", description="self-learning hybrid Monte Carlo in JAX")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run SLHMC")
    run.add_argument("--quickstart", action="store_true", help="the embedded H2O / PBE demo (default)")
    run.add_argument("--chains", type=int, default=4)
    run.add_argument("--steps", type=int, default=20)
    run.add_argument("--temperature-K", dest="temperature_K", type=float, default=300.0)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--checkpoint", default=None, help="checkpoint file (resumes if present)")
    run.add_argument("--store", default=None, help="label store (SQLite) for every DFT result (default: a temporary file)")
    nb = sub.add_parser("neighbours", help="neighbour statistics of a rutile supercell")
    nb.add_argument("--repeat", type=int, nargs=3, default=[2, 2, 3])
    nb.add_argument("--cutoff", type=float, default=6.0, help="Angstrom")
    add_finetune_parser(sub)
    add_analyze_parser(sub)
    args = parser.parse_args(argv)
    for name in ("chains", "steps"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.command == "finetune":
        return run_finetune(args)
    if args.command == "analyze":
        return run_analyze(args)
    if args.command == "run":
        return run_quickstart(args)
    return run_neighbours(args)


if __name__ == "__main__":
    sys.exit(main())
