"""Benchmark SLHMC against its named reference, direct MD on the target's own forces: ESS per target call.

``slhmc_jax.app.validate`` on the TiO2 molecule at 300 K: direct BAOAB Langevin MD on the target's forces
(the reference) and SLHMC judged by the same target, proposed by the packaged LDA MACE ("foundation")
and by that MACE fine-tuned on direct-MD frames ("finetuned"). Printed per observable (the Ti-O bond
length, the target energy): the ESS per target call of each sampler and the ratio SLHMC / direct MD,
KS p-values (IAT-thinned) and W1 with bootstrap intervals.

Targets:
- ``--quick``: an analytic TiO2 "teacher" (:func:`teacher_energy`: Morse Ti-O bonds, r0 = 1.62 A, and a
  harmonic O-Ti-O bend, 110 deg; the packaged MACE has 1.6365 A and 108.2 deg, i.e. a functional gap of
  about one thermal width of the bond), evaluated through ``PotentialTarget`` (milliseconds per call), so
  the run takes under a minute on 2 cores (48 s, December 2026); every call is still counted and stored.
  PySCF PBE/STO-3G at a rotation-invariant grid (level 2) costs 0.78 s per force call here, too slow for a
  quick run.
- default: ``examples/validate.toml`` (PySCF PBE/STO-3G, grid level 2: 41 min here, 26 of them the MD's 2001
  force calls), the same as ``slhmc validate``.

The MD's friction is not a strawman: on the teacher (8 replicas x 1200 steps at 1 fs) the direct-MD ESS per
force call of the bond length is 0.087 / 0.086 / 0.082 / 0.079 / 0.073 at gamma = 2 / 5 / 20 / 50 / 100 per ps,
and of the energy 0.006 / 0.005 / 0.038 / 0.040 / 0.027: 20 / ps (used) is near the best for both.
A caution the run itself shows: the MD's bond length and energy have oscillating autocorrelations, for which
Geyer's initial-sequence ESS (ArviZ) overstates the MD's energy ESS (batch means: IAT 30-56 steps vs ArviZ's
18-22); that favours the MD in the energy ratio, and the KS / W1 comparison uses the larger IAT. The --quick
output also compares each sampler's means with the teacher's exact canonical means (3-D quadrature).

Usage: python benchmarks/validate.py [--quick] [--json out.json] [--run-dir DIR]. Never asserts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

TEACHER = {"D_eV": 6.0, "a_per_A": 1.97, "r0_A": 1.62, "k_bend_eV_rad2": 2.0, "theta0_deg": 110.0}


def teacher_energy(positions, cell, numbers):
    """E = sum_b D [(1 - exp(-a (r_b - r0)))^2 - 1] + k_bend / 2 (theta - theta0)^2 (eV) of the TiO2 molecule
    (atom 0 Ti, atoms 1 and 2 O; r_b the Ti-O distances in A, theta the O-Ti-O angle)."""
    import jax.numpy as jnp

    t = TEACHER
    u, v = positions[1] - positions[0], positions[2] - positions[0]
    r1, r2 = jnp.linalg.norm(u), jnp.linalg.norm(v)
    morse = lambda r: t["D_eV"] * ((1.0 - jnp.exp(-t["a_per_A"] * (r - t["r0_A"]))) ** 2 - 1.0)  # noqa: E731
    theta = jnp.arccos(jnp.clip(jnp.dot(u, v) / (r1 * r2), -1.0, 1.0))
    return morse(r1) + morse(r2) + 0.5 * t["k_bend_eV_rad2"] * (theta - jnp.deg2rad(t["theta0_deg"])) ** 2


def teacher_exact_means(temperature_K: float = 300.0, n: int = 241) -> dict:
    """Canonical means of the teacher by quadrature (independent of both samplers): the molecule's internal
    coordinates (r1, r2, theta) carry the Jacobian r1^2 r2^2 sin(theta) (rotations and translation integrate out),
    p ~ r1^2 r2^2 sin(theta) exp(-V / kT); returns {"nn_Ti-O_A": <(r1 + r2) / 2>, "target_energy_eV": <V>}."""
    from ase.units import kB

    t = TEACHER
    kT = kB * temperature_K
    r = np.linspace(t["r0_A"] - 0.2, t["r0_A"] + 0.25, n)
    th = np.deg2rad(np.linspace(t["theta0_deg"] - 35.0, t["theta0_deg"] + 35.0, n))
    r1, r2, theta = np.meshgrid(r, r, th, indexing="ij")
    morse = lambda x: t["D_eV"] * ((1.0 - np.exp(-t["a_per_A"] * (x - t["r0_A"]))) ** 2 - 1.0)  # noqa: E731
    v = morse(r1) + morse(r2) + 0.5 * t["k_bend_eV_rad2"] * (theta - np.deg2rad(t["theta0_deg"])) ** 2
    w = r1**2 * r2**2 * np.sin(theta) * np.exp(-(v - v.min()) / kT)
    return {"nn_Ti-O_A": float(np.sum(0.5 * (r1 + r2) * w) / w.sum()), "target_energy_eV": float(np.sum(v * w) / w.sum())}


def exact_check(run_dir: Path, config) -> dict:
    """Each sampler's mean against the quadrature value, in standard errors (sd / sqrt(n / tau), tau the larger of
    the ArviZ and batch-means IAT): {observable: {"exact": value, sampler: {"mean", "stderr", "z"}}}."""
    from slhmc_jax.analysis.diagnostics import chain_statistics
    from slhmc_jax.analysis.statistics import batch_means_iat
    from slhmc_jax.app import validate
    from slhmc_jax.sampler.trajectory import Trajectory

    exact = teacher_exact_means(config.workflow.sampler.temperature_K)
    sets = {"direct_md": Trajectory.load(run_dir / "md.npz")}  # md.npz and samples.npz are trajectory files
    for p in config.validate.proposals:
        sets[p] = Trajectory.load(run_dir / f"slhmc_{p}" / "samples.npz")
    out = {name: {"exact": value} for name, value in exact.items()}
    for sampler, frames in sets.items():
        obs = validate.frame_observables(frames, (("Ti", "O"),), 2)
        for name, v in obs.items():
            tau = max(chain_statistics(v).iat, np.nan_to_num(batch_means_iat(v), nan=1.0))
            err = float(np.std(v) / np.sqrt(v.size / tau))
            out[name][sampler] = {"mean": float(np.mean(v)), "stderr": err, "z": float((np.mean(v) - exact[name]) / err)}
    return out


def quick_config():
    """The --quick run: both samplers spend the same share of their calls before recording (MD: 300 of 1500
    steps; SLHMC: 60 of 310, warm-up and burn-in), 16 MD replicas and 8 chains. The SLHMC share is set by the
    foundation proposal's transient: with 20 steps discarded its target energy came out 4 sigma low (-0.0025 eV
    in 256 chains x 250 steps; 50-step blocks of a 1000-step run: -0.0049, -0.0023, -0.0007, then 0 within
    0.0006), while 256 chains x 800 steps after 100 burn-in steps are unbiased (+0.0002 +- 0.0006 eV)."""
    from slhmc_jax.app import config as cfg

    data = {
        "run": {"seed": 0},
        "system": {"structure": "molecule", "name": "TiO2"},
        "model": {"foundation": "package:quickstart_tio2_lda", "dtype": "float64"},
        "target": {"code": "pyscf", "xc": "pbe", "basis": "sto-3g"},  # not used: the teacher is passed in
        "sampler": {"temperature_K": 300.0, "n_chains": 8, "n_steps": 250, "trajectory_steps": 16, "timestep_fs": 0.5,
                    "warmup_steps": 10, "burn_in_steps": 50},
        "finetune": {"epochs": 40, "batch_size": 8, "learning_rate": 2e-3, "forces_weight": 100.0, "valid_fraction": 0.15,
                     "early_stopping_patience": 15, "plot": False},
        "evaluation": {"pairs": [["Ti", "O"]], "k": 2, "n_bootstrap": 500},
        "cost": {"seconds_per_call": 0.002},
        "validate": {"thermostat": "baoab", "friction_per_ps": 20.0, "timestep_fs": 1.0, "md_steps": 1200,
                     "replicas": 16, "burn_in_steps": 300, "finetune_structures": 200},
    }
    return cfg.validation_from_dict(data, source="benchmarks/validate.py --quick")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="analytic TiO2 teacher as the target (minutes)")
    ap.add_argument("--json", help="write the results as JSON to this path")
    ap.add_argument("--run-dir", dest="run_dir", default=None, help="run directory (default: a temporary one)")
    args = ap.parse_args(argv)

    from slhmc_jax.app import config as cfg
    from slhmc_jax.app import validate

    t0 = time.perf_counter()
    if args.quick:
        from slhmc_jax.models.base import FunctionPotential
        from slhmc_jax.targets import PotentialTarget

        config = quick_config()
        target = PotentialTarget(FunctionPotential(teacher_energy))
        target_description = f"analytic TiO2 teacher {TEACHER} (PotentialTarget)"
    else:
        config = cfg.load_validation(ROOT / "examples" / "validate.toml")
        target = None
        t = config.workflow.target
        target_description = f"PySCF {t.xc}/{t.basis}, grid level {t.grids_level}"
    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="slhmc-validate-bench-"))
    path = validate.run(config, run_dir, target=target, progress=sys.stderr.isatty())
    data = json.loads(path.read_text())
    wall = time.perf_counter() - t0
    data["benchmark"] = {"mode": "quick" if args.quick else "full", "target": target_description, "wall_s": wall,
                         "run_dir": str(run_dir), "reference": "direct target MD (BAOAB Langevin on the target's forces)"}

    if args.quick:
        data["benchmark"]["exact"] = exact_check(run_dir, config)
    print(f"target: {target_description}; run directory {run_dir}; wall {wall:.0f} s")
    print("target calls: " + ", ".join(f"{k} {v}" for k, v in data["target_calls"].items())
          + "; acceptance: " + ", ".join(f"{k} {v:.3f}" for k, v in data["acceptance"].items()))
    header = f"{'observable':<18s} {'sampler':<10s} {'ESS':>8s} {'IAT':>7s} {'ESS/call':>9s} {'ratio':>7s} {'KS p':>7s} {'W1 [95%]':>26s}"
    print(header)
    print("-" * len(header))
    for name in data["ess"]["direct_md"]:
        e = data["ess"]["direct_md"][name]
        print(f"{name:<18s} {'direct MD':<10s} {e:8.1f} {data['iat_steps']['direct_md'][name]:7.2f} "
              f"{data['ess_per_target_call']['direct_md'][name]:9.4f} {1.0:7.2f} {'':>7s} {'':>26s}")
        for p in data["ess_per_target_call_ratio"]:
            w = data["wasserstein"][p][name]
            print(f"{'':<18s} {p:<10s} {data['ess'][p][name]:8.1f} {data['iat_steps'][p][name]:7.2f} "
                  f"{data['ess_per_target_call'][p][name]:9.4f} {data['ess_per_target_call_ratio'][p][name]:7.2f} "
                  f"{data['ks_pvalue'][p][name]:7.3f} {w[0]:8.4f} [{w[1]:.4f}, {w[2]:.4f}]")
    print("runtime (s): " + ", ".join(f"{k} {v:.1f}" for k, v in data["runtime_s"].items()))
    for name, row in data["benchmark"].get("exact", {}).items():
        print(f"{name}: exact (quadrature) {row['exact']:.5f}; " + ", ".join(
            f"{k} {v['mean']:.5f} +- {v['stderr']:.5f} ({v['z']:+.1f} sigma)" for k, v in row.items() if k != "exact"))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
