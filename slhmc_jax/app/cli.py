"""Command line.

- ``slhmc run [CONFIG] [--run-dir DIR] [--dry-run]``: the self-learning workflow and its control arms
  (:mod:`slhmc_jax.app.workflow`); without a config the embedded quickstart;
- ``slhmc analyze RUN_DIR`` / ``slhmc analyze TRAJ --reference REF``: the report;
- ``slhmc validate [CONFIG] [--run-dir DIR]``: SLHMC against direct MD on the target's own forces
  (:mod:`slhmc_jax.app.validate`); without a config the embedded default (TiO2, PySCF PBE);
- ``slhmc finetune``: optax fine-tuning of a MACE model on labelled structures;
- ``slhmc neighbours``: neighbour statistics of a rutile supercell.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def add_run_parser(sub) -> None:
    """``slhmc run [CONFIG] [--run-dir DIR] [--dry-run]``: the self-learning workflow (the main job)."""
    run = sub.add_parser("run", help="the self-learning workflow: SLHMC iterations, control arms, report")
    run.add_argument("config", nargs="?", default=None,
                     help="TOML config (default: the embedded quickstart, slhmc_jax/data/quickstart.toml)")
    run.add_argument("--quickstart", action="store_true", help="the embedded quickstart config (the default)")
    run.add_argument("--run-dir", dest="run_dir", default=None,
                     help="run directory (default: slhmc-run-<config name>); the same command resumes a killed run")
    run.add_argument("--dry-run", dest="dry_run", action="store_true",
                     help="validate the config and print the planned target calls and cost, run nothing")
    run.add_argument("--quiet", action="store_true", help="no progress bars")


def _load_config(command: str, load, path):
    """``load(path)``, or None after printing the config error (the command then exits 2)."""
    from slhmc_jax.app import config as cfg

    try:
        return load(path)
    except cfg.ConfigError as err:
        print(f"slhmc {command}: error in the config: {err}", file=sys.stderr)
        return None


def _run_to_report(command: str, job, run_dir):
    """Run ``job() -> report JSON path`` and print the wall time (s) and the report's paths; the report as a
    dict, or None after printing the error (a ConfigError or another ValueError; the command then exits 2).

    A target that fails for good (SCF not converged after the retry ladder, NaN energy) ends the command
    with exit status 1 and a message, not a traceback: every result before it is in the run directory's
    label store, and the same command resumes from them without repeating one.
    """
    import json

    from slhmc_jax.targets.base import TargetEvaluationError

    start = time.perf_counter()
    try:
        report_path = job()
    except ValueError as err:
        print(f"slhmc {command}: error: {err}", file=sys.stderr)
        return None
    except TargetEvaluationError as err:
        print(f"slhmc {command}: the target failed: {err}\nEvery earlier target result is kept in "
              f"{run_dir / 'labels.sqlite'}; the same command resumes from them.", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"\nwall time {time.perf_counter() - start:.0f} s; report: {report_path} and {report_path.with_suffix('.md')}")
    return json.loads(report_path.read_text())


def run_workflow(args) -> int:
    from pathlib import Path

    from slhmc_jax.app import config as cfg

    path = Path(args.config) if args.config else cfg.quickstart_path()
    config = _load_config("run", cfg.load, path)
    if config is None:
        return 2
    from slhmc_jax.app import workflow

    plan = workflow.plan(config)
    print(f"slhmc run: {path} ({config.run.iterations} SLHMC iterations, arms {', '.join(config.run.arms)}; "
          f"target {config.target.code} {config.target.xc if config.target.code == 'pyscf' else config.target.calculator})")
    print("planned target calls (upper bounds) and the cost at [cost] seconds_per_call:")
    print(plan.describe())
    if args.dry_run:
        return 0
    run_dir = Path(args.run_dir) if args.run_dir else Path(f"slhmc-run-{path.stem}")
    report = _run_to_report("run", lambda: workflow.run(config, run_dir, progress=not args.quiet), run_dir)
    if report is None:
        return 2
    for it in report["metadata"]["iterations"]:
        print(f"  SLHMC iteration {it['iteration']} (proposal {it['proposal']}): acceptance {it['acceptance']:.3f}, "
              f"{it['target_calls']} target calls")
    print("  Wasserstein W1 to the target reference [95% interval]:")
    for arm, values in report["arms"].items():
        for name, (w, lo, hi) in values["wasserstein"].items():
            print(f"    {arm:<11s} {name:<14s} {w:.4f} [{lo:.4f}, {hi:.4f}]")
    print("  time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in report["time_breakdown_s"].items()))
    return 0


def add_validate_parser(sub) -> None:
    """``slhmc validate [CONFIG] [--run-dir DIR]``: SLHMC against direct target MD, ESS per target call."""
    va = sub.add_parser("validate", help="SLHMC against direct MD on the target's own forces: KS, W1, ESS per target call")
    va.add_argument("config", nargs="?", default=None,
                    help="TOML config with a [validate] table (default: the embedded slhmc_jax/data/validate.toml)")
    va.add_argument("--run-dir", dest="run_dir", default=None,
                    help="run directory (default: slhmc-validate-<config name>); the same command resumes a killed run")
    va.add_argument("--quiet", action="store_true", help="no progress bars")


def run_validate(args) -> int:
    from pathlib import Path

    from slhmc_jax.app import config as cfg

    path = Path(args.config) if args.config else cfg.validate_path()
    config = _load_config("validate", cfg.load_validation, path)
    if config is None:
        return 2
    from slhmc_jax.app import validate

    run_dir = Path(args.run_dir) if args.run_dir else Path(f"slhmc-validate-{path.stem}")
    data = _run_to_report("validate", lambda: validate.run(config, run_dir, progress=not args.quiet), run_dir)
    if data is None:
        return 2
    print("  target calls: " + ", ".join(f"{k} {v}" for k, v in data["target_calls"].items()))
    for proposal, values in data["ess_per_target_call_ratio"].items():
        for name, ratio in values.items():
            w, lo, hi = data["wasserstein"][proposal][name]
            print(f"  {proposal:<10s} {name:<18s} KS p {data['ks_pvalue'][proposal][name]:.3g}, "
                  f"W1 {w:.4g} [{lo:.4g}, {hi:.4g}], ESS/target call vs direct MD x{ratio:.3g}")
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

    from slhmc_jax.analysis import report

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
    add_run_parser(sub)
    nb = sub.add_parser("neighbours", help="neighbour statistics of a rutile supercell")
    nb.add_argument("--repeat", type=int, nargs=3, default=[2, 2, 3])
    nb.add_argument("--cutoff", type=float, default=6.0, help="Angstrom")
    add_finetune_parser(sub)
    add_analyze_parser(sub)
    add_validate_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "finetune":
        return run_finetune(args)
    if args.command == "analyze":
        return run_analyze(args)
    if args.command == "run":
        return run_workflow(args)
    if args.command == "validate":
        return run_validate(args)
    return run_neighbours(args)


if __name__ == "__main__":
    sys.exit(main())
