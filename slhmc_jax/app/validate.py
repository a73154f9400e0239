"""The proof of SLHMC: its samples against direct MD on the target's own forces, per target call.

``slhmc validate`` runs, on one system and one target:

1. **direct target MD** (:mod:`slhmc_jax.sampler.md`, whose docstring gives the thermostats' equations):
   velocity Verlet with the TARGET's forces under a thermostat that samples the canonical ensemble
   exactly as dt -> 0, "baoab" (Langevin) or "bussi" (stochastic velocity rescaling); the target is
   called on the host once per MD step with all replicas in one batch, every result committed to the
   label store before it is used, every configuration counted; ``burn_in_steps`` discarded
   (:func:`slhmc_jax.sampler.md.run_direct_md`). The target runs in this process ([target] dispatch
   is not used: one PySCF process, its replicas one after the other, each warm-started from its own
   previous step).

2. **SLHMC** (:func:`slhmc_jax.sample`) on the same target, system and temperature, once per
   proposal: "foundation" (the [model] foundation unchanged) and "finetuned". The fine-tuned
   proposal is the foundation fine-tuned (:func:`slhmc_jax.finetune.finetune`, the [finetune]
   recipe) on up to ``finetune_structures`` direct-MD frames with their target energies and
   forces: the cheapest honest route, because those labels are exact canonical draws that the
   validation has already paid for (zero extra target calls; SLHMC labels would need forces at
   every proposal). The fine-tuned arm's ratio below does not charge those training calls; the
   JSON says how many labels it used (``finetune.structures``). SLHMC's target judges energies only.

3. **comparison**, per observable (the [evaluation] pairs' nearest-neighbour distance, as the
   per-frame mean of each a atom's k nearest b distances, ``nn_<a>-<b>_A`` in A, and the target
   energy ``target_energy_eV`` in eV):

   - Kolmogorov-Smirnov statistic and p-value (``scipy.stats.ks_2samp``) of SLHMC against direct MD
     on samples thinned by their own integrated autocorrelation time (every ceil(tau)-th draw of
     each chain, tau the larger of ArviZ's and the batch-means estimate, :func:`~slhmc_jax.analysis.statistics.batch_means_iat`,
     which an MD trajectory's oscillating autocorrelation does not fool), so that the draws are
     close to independent and the p-value is honest;
   - Wasserstein W1 with its moving-block bootstrap interval (:func:`slhmc_jax.analysis.statistics.wasserstein`,
     blocks from the same conservative tau);
   - the ESS of the observable (:func:`slhmc_jax.analysis.diagnostics.chain_statistics`, one estimator for
     both, credited at most the number of draws: :func:`~slhmc_jax.analysis.statistics.capped_ess`) per target call (every call counted: the MD's force calls, SLHMC's start, warm-up,
     burn-in and production judgements), and the ratio SLHMC / direct MD; also per second of
     target time (a force call costs more than an energy).

Feasibility rule (checked before anything runs; :mod:`slhmc_jax.app.validation_checks`): direct MD is
refused for more than ``max_atoms`` atoms, or when replicas x (1 + burn_in_steps + md_steps) force
calls x [cost] seconds_per_call exceeds ``max_md_cost_s``. Bussi on a system that is not fully periodic
is warned of (``warn_if_thermostat_not_ergodic``). On a molecule, before the MD, the target's
energy under three rigid rotations is compared with the start's (``check_rotation_invariance``,
4 energy calls, not charged to either sampler): a spread over 0.25 kT is warned of and reported.

Output (``RUN_DIR``, written by :mod:`slhmc_jax.app.validation_report`): ``validation.json``,
``validation.md``, ``figures/validation_<observable>.png`` (histograms, direct MD against each SLHMC
proposal), ``labels.sqlite``, ``md.npz`` (:class:`slhmc_jax.sampler.md.MDResult`, a trajectory file),
``slhmc_<proposal>/samples.npz`` (:class:`SlhmcRun`, a trajectory file), ``models/finetuned.*``. ``validation.json`` layout ({proposal} is
"foundation" / "finetuned", {sampler} is "direct_md" or a proposal, {obs} an observable name)::

    ess_per_target_call_ratio   {proposal: {obs: ESS/call of SLHMC / ESS/call of direct MD}}
    ess_per_target_second_ratio {proposal: {obs: the same per second of target wall time}}
    ks_pvalue, ks_statistic     {proposal: {obs: value}}    SLHMC against direct MD, thinned
    wasserstein                 {proposal: {obs: [W1, ci_low, ci_high]}}
    ess, ess_per_target_call, iat_steps, iat_batch_means_steps, means, ks_samples   {sampler: {obs: value}}
    target_calls, acceptance    {sampler: value}
    runtime_s                   {phase: seconds when it ran, total, this_session}; target_seconds {sampler: {wall, cpu}}
    kinetic_temperature_K       {mean: the MD's, standard_error (batch means), thermostat_K}
    rotation_check              {energy_spread_eV, kT_eV, n_target_calls} (molecules; null for crystals)
    finetune, settings, system, figures   what was run and written

The ESS ratios are of production runs: SLHMC's calls include its start, warm-up and burn-in, the
MD's its start and burn-in; the fine-tuned proposal's training labels are the MD's own frames.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from slhmc_jax import precision  # noqa: F401  (float64)
from slhmc_jax.analysis.formatting import json_safe
from slhmc_jax.analysis.statistics import comparisons
from slhmc_jax.app import config as cfg
from slhmc_jax.app.run_files import claim_run_directory, load_model, model_path, save_model
from slhmc_jax.app.validation_checks import (RotationCheck, check_direct_md_feasible, check_rotation_invariance,
                                             fully_periodic, warn_if_thermostat_not_ergodic)
from slhmc_jax.app.validation_report import report_data, report_markdown, write_figures
from slhmc_jax.files import atomic_write, write_json
from slhmc_jax.targets.stack import energy_only
from slhmc_jax.sampler.md import MDResult, MDSettings, run_direct_md
from slhmc_jax.sampler.trajectory import Trajectory

SAMPLERS = ("direct_md",) + cfg.VALIDATE_PROPOSALS


def md_settings(config: cfg.ValidationConfig) -> MDSettings:
    """The direct MD of a config: [validate] with [sampler]'s temperature and a seed offset from [run] seed."""
    v, w = config.validate, config.workflow
    return MDSettings(thermostat=v.thermostat, temperature_K=v.temperature_K or w.sampler.temperature_K,
                      timestep_fs=v.timestep_fs, n_steps=v.md_steps, n_replicas=v.replicas,
                      burn_in_steps=v.burn_in_steps, friction_per_ps=v.friction_per_ps, tau_fs=v.tau_fs,
                      seed=w.run.seed + 3000)


def frame_observables(frames: Trajectory, pairs, k: int) -> dict:
    """Per-frame scalar observables of chains of frames.

    Args:
        frames: C chains of F frames with their ``target_energies`` (eV).
        pairs: element pairs (a, b). k: nearest neighbours (for a molecule at most the b atoms there are).

    Returns:
        {"nn_<a>-<b>_A": (C, F) mean distance of each a atom to its k nearest b atoms (A),
         "target_energy_eV": (C, F)}.
    """
    from ase.data import atomic_numbers

    from slhmc_jax.analysis.observables import nearest_neighbour_distances

    C, F = frames.n_chains, frames.n_frames
    numbers = frames.atomic_numbers
    out = {}
    for a, b in pairs:
        kk = int(k)
        if not any(frames.pbc):
            kk = min(kk, int(np.sum(numbers == atomic_numbers[b])) - (a == b))
        d = nearest_neighbour_distances(frames.frames(), a, b, kk)
        out[f"nn_{a}-{b}_A"] = d.mean(axis=(1, 2)).reshape(C, F)
    out["target_energy_eV"] = np.asarray(frames.target_energies, np.float64).reshape(C, F)
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class SlhmcRun(Trajectory):
    """One SLHMC proposal's production samples (a :class:`Trajectory`) and what they cost.

    Attributes:
        judged: configurations judged (target or store), start, warm-up and burn-in included: the cost
            without a store, the denominator of the ESS per target call.
        target_wall_s, target_cpu_s: seconds in target batches (wall; this process's CPU).
        wall_s: the whole run. timestep_fs, trajectory_steps: the production dt (fs) and L.
    """

    judged: int
    target_wall_s: float
    target_cpu_s: float
    wall_s: float
    timestep_fs: float
    trajectory_steps: int

    @property
    def acceptance(self) -> float:
        """The mean over chains of each chain's accepted fraction of production moves."""
        return float(self.accepted.mean(1).mean())

    @classmethod
    def from_sample(cls, result, wall_s: float) -> "SlhmcRun":
        """From a :class:`slhmc_jax.SampleResult` that took ``wall_s`` seconds."""
        frames, counts, d = result.trajectory(), result.counters, result.diagnostics
        return cls(**{f.name: getattr(frames, f.name) for f in dataclasses.fields(Trajectory)}, judged=int(counts.judged),
                   target_wall_s=float(counts.target_wall_s), target_cpu_s=float(counts.target_cpu_s),
                   wall_s=float(wall_s), timestep_fs=float(d.timestep_fs), trajectory_steps=int(d.trajectory_steps))


class Validation:
    """One ``slhmc validate`` run in a run directory (see the module docstring); rerun, it resumes:
    finished phases are read back, sampler runs continue from their checkpoints, and every target
    result already in the label store is reused."""

    def __init__(self, config: cfg.ValidationConfig, run_dir, *, foundation=None, target=None, progress: bool = True):
        from slhmc_jax.app import workflow as wf
        from slhmc_jax.targets import as_target
        from slhmc_jax.targets.store import LabelStore

        self.config = config
        self.w = config.workflow
        self.v = config.validate
        self.dir = Path(run_dir)
        self.progress = progress
        self.atoms = wf.build_structure(self.w.system)
        self.md = md_settings(config)
        self.md_cost_estimate_s = check_direct_md_feasible(len(self.atoms), self.md, self.w.cost.seconds_per_call,
                                                           max_atoms=self.v.max_atoms, max_md_cost_s=self.v.max_md_cost_s)
        warn_if_thermostat_not_ergodic(self.md, self.atoms.pbc)
        # phases are read back, so another config in the directory would mix two runs
        claim_run_directory(self.dir, cfg.validation_to_toml(config), "a validation")
        self.store = LabelStore(self.dir / "labels.sqlite")
        self.target = as_target(target) if target is not None else wf.build_target(dataclasses.replace(self.w.target, dispatch="serial"))
        self.foundation = foundation if foundation is not None else self._load_foundation()
        self.runtime_path = self.dir / "runtime.json"  # seconds of each phase when it ran (a rerun reads them back)
        self.runtime: dict = json.loads(self.runtime_path.read_text()) if self.runtime_path.exists() else {}

    def _load_foundation(self):
        from slhmc_jax.models.foundations import load_foundation

        m = self.w.model
        z = sorted(set(int(v) for v in self.atoms.numbers))
        return load_foundation(m.foundation, dtype=m.dtype, hyperparameters=m.hyperparameters, seed=m.seed, atomic_numbers=z)

    def _log(self, text: str) -> None:
        if self.progress:
            print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    # ---- phases

    def rotation_check(self) -> dict | None:
        """:func:`check_rotation_invariance` of the start geometry (systems not periodic in all three
        directions only), its result kept in rotation_check.json (a rerun warns again from it)."""
        if fully_periodic(self.atoms.pbc):
            return None
        path = self.dir / "rotation_check.json"
        if path.exists():
            data = json.loads(path.read_text())
            RotationCheck(**data).warn_if_not_invariant()
            return data
        check = check_rotation_invariance(self.atoms, self.target, self.md.temperature_K, store=self.store)
        data = dataclasses.asdict(check)
        write_json(path, data, indent=None)
        return data

    def direct_md(self) -> MDResult:
        path = self.dir / "md.npz"
        if path.exists():
            return MDResult.load(path)
        self._log(f"direct target MD: {self.md.thermostat}, {self.md.n_replicas} replicas x ({self.md.burn_in_steps} burn-in "
                  f"+ {self.md.n_steps}) steps of {self.md.timestep_fs:g} fs ({self.md.n_force_calls} force calls, "
                  f"estimated {self.md_cost_estimate_s:.0f} s)")
        result = run_direct_md(self.atoms, self.target, self.md, store=self.store, progress=self.progress)
        result.save(path)
        return result

    def finetuned(self, md: MDResult) -> tuple:
        """(the foundation fine-tuned on evenly spaced direct-MD frames, labels their target energy and
        forces; what it was trained on, validation.json's ``finetune``)."""
        from ase.calculators.singlepoint import SinglePointCalculator

        from slhmc_jax import finetune

        stem = self.dir / "models" / "finetuned"
        R, n = md.target_energies.shape
        picks = np.unique(np.linspace(0, R * n - 1, min(self.v.finetune_structures, R * n)).round().astype(int))
        info = {"source": "direct_md", "structures": int(picks.size), "extra_target_calls": 0}
        info_path = self.dir / "models" / "finetuned.json"
        done = load_model(self.foundation, stem)
        if done is not None:
            return done, (json.loads(info_path.read_text()) if info_path.exists() else info)
        train = []
        for i in picks:
            step, r = divmod(int(i), R)  # step-major: every replica, along the whole run
            a = self.atoms.copy()
            a.positions = md.positions[r, step]
            a.calc = SinglePointCalculator(a, energy=float(md.target_energies[r, step]), forces=md.forces[r, step])
            train.append(a)
        self._log(f"fine-tuning the foundation on {len(train)} direct-MD frames (no extra target calls)")
        settings = dataclasses.replace(self.w.finetune, output_dir=str(self.dir / "finetune"), resume=True,
                                       progress=self.progress, seed=self.w.finetune.seed + self.w.run.seed)
        result = finetune.finetune(self.foundation, train, settings=settings)
        first, last = result.history[0], result.history[-1]
        info.update(valid_forces_rmse_eV_A=[first.valid_forces_rmse_eV_A, last.valid_forces_rmse_eV_A],
                    valid_energy_rmse_eV_atom=[first.valid_energy_rmse_eV_atom, last.valid_energy_rmse_eV_atom])
        write_json(info_path, json_safe(info), indent=None)
        save_model(result.potential, stem)
        return result.potential, info

    def slhmc(self, name: str, proposal, offset: int) -> SlhmcRun:
        import slhmc_jax

        out = self.dir / f"slhmc_{name}" / "samples.npz"
        if out.exists():
            return SlhmcRun.load(out)
        s = self.w.sampler
        settings = dataclasses.replace(s, n_steps=self.v.slhmc_steps or s.n_steps, seed=self.w.run.seed + s.seed + offset)
        self._log(f"SLHMC, {name} proposal: {settings.n_chains} chains x ({settings.warmup_steps} warm-up + "
                  f"{settings.n_burn_in} burn-in + {settings.n_steps}) steps")
        out.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        res = slhmc_jax.sample(self.atoms, proposal, energy_only(self.target), settings=settings, store=self.store,
                               labels="energy", checkpoint=out.parent / "sample.ckpt", progress=self.progress)
        run = SlhmcRun.from_sample(res, wall_s=time.perf_counter() - t0)
        run.save(out)
        return run

    # ---- the run

    def run(self) -> Path:
        t_start = time.perf_counter()
        rotation = self.rotation_check()
        md = self.direct_md()
        self.runtime["direct_md"] = md.wall_s
        finetune_info, runs = None, {}
        for offset, name in enumerate(self.v.proposals):
            proposal = self.foundation
            if name == "finetuned":
                t0 = time.perf_counter()
                trained = model_path(self.dir / "models" / "finetuned").exists()
                proposal, finetune_info = self.finetuned(md)
                if not trained:
                    self.runtime["finetune"] = time.perf_counter() - t0
            runs[name] = self.slhmc(name, proposal, offset)
            self.runtime[f"slhmc_{name}"] = runs[name].wall_s
        t0 = time.perf_counter()
        e = self.w.evaluation
        pairs = tuple(tuple(p) for p in e.pairs)
        md_obs = frame_observables(md, pairs, e.k)
        sl_obs = {p: frame_observables(r, pairs, e.k) for p, r in runs.items()}
        comp = comparisons(md_obs, sl_obs, md.judged, {p: r.judged for p, r in runs.items()}, n_bootstrap=e.n_bootstrap,
                           seed=self.w.run.seed)
        self.runtime["analysis"] = time.perf_counter() - t0
        self.runtime["total"] = sum(v for k, v in self.runtime.items() if k not in ("total", "this_session"))
        self.runtime["this_session"] = time.perf_counter() - t_start
        write_json(self.runtime_path, self.runtime, indent=None)
        data = report_data(md, runs, md_obs, sl_obs, comp, thermostat_K=self.md.temperature_K, rotation=rotation,
                           runtime=self.runtime, finetune=finetune_info, settings=self._settings(runs, list(md_obs)))
        figures = write_figures(md_obs, sl_obs, comp, self.dir / "figures")
        data["figures"] = [str(Path(p).relative_to(self.dir)) for p, _ in figures]
        path = write_json(self.dir / "validation.json", json_safe(data))
        atomic_write(self.dir / "validation.md", report_markdown(data, figures))
        return path

    def _settings(self, runs: dict, observables: list) -> dict:
        """validation.json's ``settings``: what was run."""
        s = self.w.sampler
        return {
            "config": self.w.source,
            "target": self.target.settings(),
            "md": dataclasses.asdict(self.md) | {"force_calls": self.md.n_force_calls,
                                                 "estimated_cost_s": self.md_cost_estimate_s},
            "sampler": {"temperature_K": s.temperature_K, "n_chains": s.n_chains,
                        "n_steps": self.v.slhmc_steps or s.n_steps, "warmup_steps": s.warmup_steps,
                        "burn_in_steps": s.n_burn_in,
                        **{f"{p}_timestep_fs": float(r.timestep_fs) for p, r in runs.items()},
                        **{f"{p}_trajectory_steps": int(r.trajectory_steps) for p, r in runs.items()}},
            "observables": {o: ("A" if o.endswith("_A") else "eV") for o in observables},
        }


def run(config: cfg.ValidationConfig, run_dir, **kw) -> Path:
    """Run (or resume) ``slhmc validate`` of ``config`` in ``run_dir``; the path of validation.json."""
    return Validation(config, run_dir, **kw).run()
