"""The self-learning workflow and its control arms: what ``slhmc run`` does.

For a config (:mod:`slhmc_jax.app.config`) and a run directory:

1. slhmc arm, iterations k = 0 .. K-1: a production SLHMC run with model_k frozen as the proposal
   and the target as the judge (every result, forces included, in the label store), then
   model_{k+1} = the foundation fine-tuned on all SLHMC samples so far (exact draws of the target
   distribution). model_0 is the foundation. Iteration k+1 starts from iteration k's end states
   (and burns in again: iteration 0's chains, proposed by the foundation, may mix slowly).
2. relabel arm: configurations drawn from the foundation's own Boltzmann distribution (HMC with
   the model as its own judge, same temperature and ensemble), as many as the slhmc arm's final
   model was trained on, labelled by the same target, fine-tuned with the same recipe: the two
   arms differ only in where their configurations come from.
3. foundation arm: the foundation unchanged.
4. reference: an SLHMC run of its own (the final slhmc model proposes, the target judges, energies
   only, own seed, own label store, from the start structure), never trained on, extended until
   every evaluation observable has [reference] min_ess effective draws (:mod:`slhmc_jax.app.reference`).
5. evaluation: each arm's final model sampled on its own (its exact Boltzmann distribution), once
   per [run] replicate (own fine-tuning and sampling seeds; relabel: its own training set);
   observables against the reference, Wasserstein distances with intervals, the importance-weight
   ESS of the relabel set, the budgets (target calls per arm); the report.

Run directory::

    RUN_DIR/config.toml            the validated config (a rerun must use the same one)
    RUN_DIR/labels.sqlite          every target result (label store)
    RUN_DIR/slhmc/iter_K/          sample checkpoint, samples.npz (the production samples, a trajectory
                                   file: slhmc_jax.sampler.trajectory) and trace.npz (their sampler traces)
    RUN_DIR/finetune/<model>/      fine-tuning checkpoints, metrics, learning curve
    RUN_DIR/models/<model>.*       models: params (.params.npz), MACE native (.npz) and mace-torch (.model)
    RUN_DIR/relabel/               the foundation's own samples (replicate i >= 1: relabel_r<i>/)
    RUN_DIR/reference/             the reference run: checkpoint, labels.sqlite, samples.npz, ess.json
    RUN_DIR/evaluation/<arm>/      each arm's model sampled on its own (replicate i >= 1: <arm>_r<i>/)
    RUN_DIR/target_seconds.json    wall seconds of target batches per arm (the budgets)
    RUN_DIR/manifest.json, reference.npz, sampler.npz, arms/   the analysis inputs (slhmc_jax.analysis.run_directory)
    RUN_DIR/report.json, report.md, figures/                   the report
    RUN_DIR/timings.json           seconds per phase (target DFT, ML sampling, training, analysis)

Killed at any moment, the same command on the same directory resumes: finished phases are read
back from their files, an unfinished sampler run continues from its checkpoint, a fine-tuning from
its checkpoint, and every target result already in the label store is reused, so no DFT call is
repeated and the end result is what an uninterrupted run gives.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from slhmc_jax.analysis import run_directory as rd
from slhmc_jax.app import config as cfg
from slhmc_jax.app.plan import Plan, plan  # noqa: F401  (slhmc run --dry-run calls workflow.plan)
from slhmc_jax.app.run_files import claim_run_directory, load_model, save_model
from slhmc_jax.files import write_json
from slhmc_jax.sampler.trajectory import Trajectory

PROMOTED_METADATA = ("time_breakdown_s", "iterations", "dft_calls")


# ----------------------------------------------------------------------------------------
# building the pieces from the config


def build_structure(system: cfg.SystemConfig):
    """The start structure (ase.Atoms) the config describes."""
    import ase.io

    from slhmc_jax import structures

    if system.structure == "molecule":
        atoms = structures.molecule(system.name)
        atoms.center(vacuum=system.vacuum_A)
        atoms.pbc = False
        return atoms
    if system.structure == "rutile":
        return structures.rutile(repeat=tuple(system.repeat))
    if system.structure == "crystal":
        kwargs = {} if system.crystalstructure is None else {"crystalstructure": system.crystalstructure}
        return structures.crystal(system.name, a=system.a_A, repeat=tuple(system.repeat), **kwargs)
    try:
        return ase.io.read(system.path)
    except FileNotFoundError:
        raise cfg.ConfigError(f"[system] path: no file at {system.path}") from None


def build_target(target: cfg.TargetConfig, compute_forces: bool = True):
    """The Target the config describes (dispatched to workers if asked); energies only unless
    ``compute_forces``."""
    if target.code == "ase":
        from slhmc_jax.targets import ASETarget

        return ASETarget(_ase_calculator(target), compute_forces=compute_forces)
    from slhmc_jax.targets import PySCFTarget

    t = PySCFTarget(xc=target.xc, basis=target.basis, pseudo=target.pseudo, kpts=target.kpts, charge=target.charge,
                    spin=target.spin, conv_tol=target.conv_tol_Ha, max_cycle=target.max_cycle,
                    grids_level=target.grids_level, ke_cutoff_Ha=target.ke_cutoff_Ha, multigrid=target.multigrid,
                    density_fit=target.density_fit, device=target.device, compute_forces=compute_forces)
    if target.dispatch == "serial":
        return t
    from slhmc_jax.targets.dispatch import DispatchedTarget, dask_executor

    executor = dask_executor(target.scheduler, n_workers=target.workers) if target.dispatch == "dask" else None
    return DispatchedTarget(t, executor=executor, max_workers=target.workers)


def _ase_calculator(target: cfg.TargetConfig):
    p = dict(target.parameters)
    try:
        if target.calculator == "emt":
            from ase.calculators.emt import EMT

            return EMT(**p)
        if target.calculator == "morse":
            from ase.calculators.morse import MorsePotential

            return MorsePotential(**p)
        from ase.calculators.lj import LennardJones

        return LennardJones(**p)
    except TypeError as err:
        raise cfg.ConfigError(f"[target] parameters: {err}") from None


PHASE_SEEDS = {"slhmc": 0, "relabel": 1000, "evaluation": 2000, "reference": 3000}


def sampler_settings(config: cfg.WorkflowConfig, phase: str, **overrides):
    """The SamplerSettings of a phase: [sampler] with a phase seed and the phase's own overrides.

    Seeds: [run] seed + [sampler] seed + the phase's (PHASE_SEEDS, 1000 apart) + ``offset`` (the
    slhmc iteration, or the replicate of relabel and evaluation sampling; < 1000, [run] checks it),
    so no two phases share one."""
    seeds = PHASE_SEEDS
    base = config.sampler
    return dataclasses.replace(base, seed=config.run.seed + base.seed + seeds[phase.split(":")[0]] + overrides.pop("offset", 0),
                               **overrides)


def replicate_name(base: str, replicate: int) -> str:
    """The file or directory name of a replicate: ``base`` for replicate 0 (the names of a run
    without replicates), ``base_r<i>`` for replicate i."""
    return base if replicate == 0 else f"{base}_r{replicate}"


class Timings:
    """Seconds per category, persisted in ``timings.json`` (a resumed run adds to it)."""

    CATEGORIES = ("target_dft", "ml_sampling", "training", "analysis")

    def __init__(self, path: Path, categories=CATEGORIES):
        self.path = path
        self.seconds = {c: 0.0 for c in categories}
        if path.exists():
            self.seconds.update(json.loads(path.read_text()))

    def add(self, category: str, seconds: float) -> None:
        self.seconds[category] = self.seconds.get(category, 0.0) + float(seconds)
        write_json(self.path, self.seconds, indent=1)


# ----------------------------------------------------------------------------------------
# a phase's samples


class SampledRun(NamedTuple):
    """A sampler run's production frames and their traces, as ``<phase>/samples.npz`` (a trajectory
    file) and ``<phase>/trace.npz`` (:func:`slhmc_jax.analysis.run_directory.write_trace`) keep them."""

    frames: Trajectory
    trace: rd.SamplerTrace

    @property
    def acceptance(self) -> float:
        """The mean over chains of each chain's accepted fraction of production moves."""
        return float(self.frames.accepted.mean(1).mean())

    def save(self, directory: Path) -> None:
        rd.write_trace(directory / "trace.npz", self.trace)
        self.frames.save(directory / "samples.npz")  # written last: the phase is complete

    @classmethod
    def load(cls, directory: Path) -> "SampledRun | None":
        """The run saved in ``directory``, or None if it has not finished."""
        if not (directory / "samples.npz").exists():
            return None
        return cls(Trajectory.load(directory / "samples.npz"), rd.read_trace(directory / "trace.npz"))


def distinct_states(frames: Trajectory) -> list[tuple[int, int]]:
    """(chain, step) of the first occurrence of each distinct store key, step-major (a mix of chains
    at every length)."""
    seen, states = set(), []
    keys = frames.store_keys
    for s in range(keys.shape[1]):
        for c in range(keys.shape[0]):
            if str(keys[c, s]) not in seen:
                seen.add(str(keys[c, s]))
                states.append((c, s))
    return states


class SlhmcArm(NamedTuple):
    """The slhmc arm: models[k] proposed iteration k (models[0] the foundation); each iteration's
    production samples; the training set of the last model and its size after each iteration."""

    models: list
    runs: list
    training_set: list
    training_sizes: list


class RelabelReplicate(NamedTuple):
    """One replicate of the relabel arm: its model, its training set (distinct configurations with
    target labels), their (target, source) energies, eV, and their store keys."""

    model: object
    training_set: list
    energies: tuple
    keys: list


def run_data(config: cfg.WorkflowConfig, runs: list, arms: dict, relabel_energies, metadata: dict,
             reference=None) -> rd.RunData:
    """What the report analyses: the target reference (``reference``, the independent run, or with
    [evaluation] reference = "last" / "all" the slhmc iterations' production samples), its traces,
    each arm's own samples (``arms``: {arm: [SampledRun per replicate]})."""
    if reference is not None:
        frames, trace = reference.frames, reference.trace
    else:
        pooled = runs if config.evaluation.reference == "all" else runs[-1:]
        frames, trace = rd.join_frames([r.frames for r in pooled]), runs[-1].trace
    arm_list = []
    for name, replicates in arms.items():
        training = None
        if name == "relabel" and relabel_energies is not None:
            training = rd.TrainingEnergies(*relabel_energies)
        arm_list.append(rd.Arm(name, tuple(r.frames for r in replicates), training))
    s = config.sampler
    return rd.RunData(reference=frames, arms=tuple(arm_list), sampler=trace, temperature_K=s.temperature_K,
                      ensemble="nvt" if s.ensemble == "nvt" else "npt", pressure_GPa=s.pressure_GPa, metadata=metadata)


def budgets(store, slhmc: SlhmcArm, relabel: list, seconds: dict) -> dict:
    """Per arm, what its training data cost: target calls (``energy``: configurations whose energy the
    target computed; ``forces``: those whose forces it computed: under [run] labels = "forces" one call
    gives both), the wall seconds of its target batches (with dispatch, workers' CPU is up to
    workers x that), and its unique training configurations (both arms de-duplicated by store key,
    per replicate for relabel). The label store holds exactly the slhmc arm's and the relabel arm's
    results (the reference has its own), one row per configuration paid for."""
    rows = store.rows()
    n_forces = sum(1 for r in rows if r[5] != "null")
    relabel_keys = {k for rep in relabel for k in rep.keys}
    relabel_forces = sum(1 for k in relabel_keys if (r := store.get_by_key(k)) is not None and r.forces_eV_A is not None)
    out = {"slhmc": {"target_calls": {"energy": len(rows) - len(relabel_keys), "forces": n_forces - relabel_forces},
                     "target_wall_s": round(seconds.get("slhmc", 0.0), 2),
                     "unique_training_configurations": [len(slhmc.training_set)]},
           "foundation": {"target_calls": {"energy": 0, "forces": 0}, "target_wall_s": 0.0,
                          "unique_training_configurations": [0]}}
    if relabel:
        out["relabel"] = {"target_calls": {"energy": len(relabel_keys), "forces": relabel_forces},
                          "target_wall_s": round(seconds.get("relabel", 0.0), 2),
                          "unique_training_configurations": [len(set(rep.keys)) for rep in relabel]}
    return out


# ----------------------------------------------------------------------------------------
# the workflow


class WorkflowPhases:
    """What every phase of a run shares: the run directory, the config, the target (timed per arm),
    the label store, resumable sampling, labelling and fine-tuning (:class:`Workflow` runs the phases)."""

    def __init__(self, config: cfg.WorkflowConfig, run_dir, *, foundation=None, target=None, progress: bool = True):
        from slhmc_jax.targets import as_target, timed
        from slhmc_jax.targets.store import LabelStore

        self.config = config
        self.dir = Path(run_dir)
        self.progress = progress
        claim_run_directory(self.dir, cfg.to_toml(config), "a run")
        self.timings = Timings(self.dir / "timings.json")
        self.target_seconds = Timings(self.dir / "target_seconds.json", categories=())  # per arm, for the budgets
        self.store = LabelStore(self.dir / "labels.sqlite")
        self.start = build_structure(config.system)
        self._given_target = target
        base = as_target(target) if target is not None else build_target(config.target)
        self.targets = {arm: timed(base, functools.partial(self._target_time, arm)) for arm in ("slhmc", "relabel")}
        self.target = self.targets["slhmc"]
        self.foundation = foundation if foundation is not None else self._load_foundation()

    def _target_time(self, arm: str, seconds: float) -> None:
        self.timings.add("target_dft", seconds)
        self.target_seconds.add(arm, seconds)

    def _load_foundation(self):
        from slhmc_jax.models.foundations import load_foundation

        m = self.config.model
        z = sorted(set(int(v) for v in self.start.numbers))
        return load_foundation(m.foundation, dtype=m.dtype, hyperparameters=m.hyperparameters, seed=m.seed,
                               atomic_numbers=z)

    def _log(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        if self.progress:
            print(line, flush=True)
        with open(self.dir / "log.txt", "a") as fh:
            fh.write(line + "\n")

    # ---- sampling

    def _timed_sampling(self, fn):
        """``fn()``, its seconds less the target's added to ml_sampling."""
        t0 = time.perf_counter()
        dft0 = self.timings.seconds["target_dft"]
        out = fn()
        spent = time.perf_counter() - t0 - (self.timings.seconds["target_dft"] - dft0)
        self.timings.add("ml_sampling", max(spent, 0.0))
        return out

    def _sample(self, name: str, starts, proposal, target, settings, *, store, labels="energy") -> SampledRun:
        """A sampler run, resumable, its production frames and traces saved in ``name/``."""
        import slhmc_jax

        done = SampledRun.load(self.dir / name)
        if done is not None:
            return done
        res = self._timed_sampling(lambda: slhmc_jax.sample(starts, proposal, target, settings=settings, store=store,
                                                            labels=labels, checkpoint=self.dir / name / "sample.ckpt",
                                                            progress=self.progress))
        run = SampledRun(*rd.reference_from_sample(res))
        run.save(self.dir / name)
        return run

    def _atoms(self, frames: Trajectory, chain: int, step: int):
        """Frame ``step`` of ``chain`` on the start structure (its atoms' other properties kept)."""
        a = self.start.copy()
        a.positions, a.cell = np.asarray(frames.positions[chain, step]), np.asarray(frames.cells[chain, step])
        return a

    # ---- labels and training

    def _labelled(self, frames: Trajectory) -> list:
        """The distinct production states of an SLHMC run with their target labels from the store
        (forces computed now, warm-started along each chain, for states stored without them)."""
        from ase.calculators.singlepoint import SinglePointCalculator

        states = [(c, s, self._atoms(frames, c, s)) for c, s in distinct_states(frames)]
        results = [self.store.get_by_key(str(frames.store_keys[c, s])) for c, s, _ in states]
        with_forces = self.config.run.labels != "energy"
        missing = [i for i, r in enumerate(results) if r is None or (with_forces and r.forces_eV_A is None)]
        if missing:
            order = sorted(missing, key=lambda i: (states[i][0], states[i][1]))  # chain by chain: warm starts
            for i, r in zip(order, self._label([states[i][2] for i in order], [states[i][0] for i in order])):
                results[i] = r
        for (_, _, a), r in zip(states, results):
            a.calc = SinglePointCalculator(a, energy=r.energy_eV, forces=r.forces_eV_A, stress=r.stress_eV_A3)
        return [a for _, _, a in states]

    def _label(self, configs: list, chains: list, arm: str = "slhmc") -> list:
        """Target results of ``configs`` through the store: with forces unless [run] labels = "energy"."""
        from slhmc_jax.targets.store import cached, label_forces

        if self.config.run.labels == "energy":
            return cached(self.targets[arm], self.store).evaluate(configs, chains)
        return label_forces(self.store, self.targets[arm], configs, chains)

    def _finetune(self, name: str, train: list, replicate: int = 0):
        """The foundation fine-tuned on ``train`` (resumable; seed offset by ``replicate``), saved as models/<name>."""
        from slhmc_jax import finetune

        stem = self.dir / "models" / name
        done = load_model(self.foundation, stem)
        if done is not None:
            return done
        self._log(f"fine-tuning {name} on {len(train)} configurations")
        settings = dataclasses.replace(self.config.finetune, output_dir=str(self.dir / "finetune" / name), resume=True,
                                       progress=self.progress,
                                       seed=self.config.finetune.seed + self.config.run.seed + replicate)
        t0 = time.perf_counter()
        result = finetune.finetune(self.foundation, train, settings=settings)
        self.timings.add("training", time.perf_counter() - t0)
        save_model(result.potential, stem)
        return result.potential


class Workflow(WorkflowPhases):
    """One run of the workflow in a run directory (see the module docstring)."""

    # ---- the arms

    def slhmc_arm(self) -> SlhmcArm:
        """SLHMC with model_k proposing iteration k, model_{k+1} fine-tuned on every sample so far."""
        c = self.config
        arm = SlhmcArm([self.foundation], [], [], [])
        starts = self.start
        for k in range(c.run.iterations):
            settings = sampler_settings(c, "slhmc", offset=k)
            self._log(f"slhmc iteration {k}: {settings.n_chains} chains x {settings.n_steps} steps, model_{k} proposes")
            run = self._sample(f"slhmc/iter_{k}", starts, arm.models[k], self.target, settings, store=self.store,
                               labels="forces" if c.run.labels == "forces" else "energy")
            self._log(f"slhmc iteration {k}: acceptance {run.acceptance:.3f}, {run.trace.target_evaluations} target calls")
            arm.runs.append(run)
            arm.training_set.extend(self._labelled(run.frames))
            arm.training_sizes.append(len(arm.training_set))
            arm.models.append(self._finetune(f"slhmc_{k + 1}", list(arm.training_set)))
            starts = [self._atoms(run.frames, ci, -1) for ci in range(run.frames.n_chains)]  # the chains' ends
        return arm

    def slhmc_replicates(self, arm: SlhmcArm) -> list:
        """The slhmc arm's final model of each replicate: replicate 0 is models[-1]; replicate i the
        foundation fine-tuned on the same training set with the fine-tuning seed offset by i."""
        name = f"slhmc_{self.config.run.iterations}"
        return [arm.models[-1]] + [self._finetune(replicate_name(name, i), list(arm.training_set), replicate=i)
                                   for i in range(1, self.config.run.replicates)]

    def relabel_arm(self, n_configurations: int, replicate: int = 0) -> RelabelReplicate:
        """The foundation's own samples (this replicate's seed), the first ``n_configurations``
        distinct ones (step-major, de-duplicated by store key like the slhmc arm's), relabelled by the
        target and fine-tuned."""
        from ase.calculators.singlepoint import SinglePointCalculator

        from slhmc_jax.targets import PotentialTarget
        from slhmc_jax.targets.store import config_key

        c, r = self.config, self.config.relabel
        # a model judging itself repeats rejected states: twice the steps leave room for n distinct ones
        n_steps = max(1, math.ceil(2 * n_configurations / r.n_chains))
        settings = sampler_settings(c, "relabel", n_steps=n_steps, on_failure="raise", offset=replicate,
                                    **r.sampler_fields())
        name = replicate_name("relabel", replicate)
        self._log(f"{name}: the foundation's own distribution, {r.n_chains} chains x {n_steps} steps")
        frames = self._sample(name, self.start, self.foundation, PotentialTarget(self.foundation), settings,
                              store=False).frames
        settings_key, picks = self.target.settings(), {}
        for s_, c_ in ((s_, c_) for s_ in range(n_steps) for c_ in range(r.n_chains)):
            key = config_key(self._atoms(frames, c_, s_), settings_key)
            if len(picks) < n_configurations and key not in picks:
                picks[key] = (c_, s_)
        keys = sorted(picks, key=lambda k: picks[k])  # chain by chain: warm starts
        picks = [picks[k] for k in keys]
        configs = [self._atoms(frames, ci, si) for ci, si in picks]
        source = np.array([frames.target_energies[ci, si] for ci, si in picks])
        self._log(f"{name}: labelling {len(configs)} distinct configurations with the target")
        results = self._label(configs, [ci for ci, _ in picks], arm="relabel")
        for a, res in zip(configs, results):
            a.calc = SinglePointCalculator(a, energy=res.energy_eV, forces=res.forces_eV_A, stress=res.stress_eV_A3)
        target_e = np.array([res.energy_eV for res in results])
        model = self._finetune(name, configs, replicate=replicate)
        return RelabelReplicate(model, configs, (target_e, source), keys)

    def evaluate(self, arm: str, model, replicate: int = 0) -> SampledRun:
        """``model`` sampled on its own (its Boltzmann distribution, exactly), this replicate's seed."""
        from slhmc_jax.targets import PotentialTarget

        e = self.config.evaluation
        settings = sampler_settings(self.config, "evaluation", n_steps=e.n_steps, on_failure="raise", offset=replicate,
                                    **e.sampler_fields())
        name = replicate_name(arm, replicate)
        self._log(f"evaluation: the {name} model on its own, {e.n_chains} chains x {e.n_steps} steps")
        return self._sample(f"evaluation/{name}", self.start, model, PotentialTarget(model), settings, store=False)

    def reference(self, proposal):
        """The independent target reference (:mod:`slhmc_jax.app.reference`), ``proposal`` proposing."""
        import slhmc_jax
        from slhmc_jax.app import reference as ref
        from slhmc_jax.targets import as_target, energy_only, timed
        from slhmc_jax.targets.store import LabelStore

        c, r = self.config, self.config.reference
        directory = self.dir / "reference"
        done = ref.load(directory, r.min_ess)
        if done is not None:
            return done
        directory.mkdir(parents=True, exist_ok=True)
        given = self._given_target
        base = energy_only(as_target(given)) if given is not None else build_target(c.target, compute_forces=False)
        target = timed(base, functools.partial(self._target_time, "reference"))
        store = LabelStore(directory / "labels.sqlite")

        def run_sampler(n_steps: int):
            settings = sampler_settings(c, "reference", n_steps=n_steps, **r.sampler_fields())
            return self._timed_sampling(lambda: slhmc_jax.sample(self.start, proposal, target, settings=settings,
                                                                 store=store, labels="energy",
                                                                 checkpoint=directory / "sample.ckpt",
                                                                 progress=self.progress))

        pairs = tuple(tuple(p) for p in c.evaluation.pairs)
        return ref.sample_reference(directory, run_sampler, r, pairs, c.evaluation.k, log=self._log)

    # ---- report

    def report(self, runs: list, arms: dict, relabel_energies, metadata: dict, reference=None) -> Path:
        """The run directory's analysis inputs and the report, built in memory and each file written once."""
        from slhmc_jax.analysis import report as rep

        t0 = time.perf_counter()
        metadata = {"config": str(self.config.source), **metadata,
                    "time_breakdown_s": {k: round(v, 2) for k, v in self.timings.seconds.items()}}
        run = run_data(self.config, runs, arms, relabel_energies, metadata, reference)
        rd.write_run_directory(self.dir, run)
        e = self.config.evaluation
        settings = rep.ReportSettings(pairs=tuple(tuple(p) for p in e.pairs), k=e.k, r_max_A=e.r_max_A, n_bins=e.n_bins,
                                      n_bootstrap=e.n_bootstrap, seed=self.config.run.seed)
        analysis = rep.analyze(run, settings)
        figures = rep.write_figures(analysis, self.dir / "figures")
        self.timings.add("analysis", time.perf_counter() - t0)
        # report.json gets the final breakdown, the analysis included
        final = {"time_breakdown_s": {k: round(v, 2) for k, v in self.timings.seconds.items()}}
        return Path(rep.write_report(analysis, self.dir, figures=figures, extra=final).json)

    def target_audit(self) -> dict:
        """Stored states re-evaluated cold (:func:`slhmc_jax.targets.audit.audit_store`): is the target
        single-valued, whatever the warm starts and retries found? Kept in ``target_audit.json`` so a
        rerun does not pay for it again; its calls are not stored and not charged to any arm."""
        from slhmc_jax.targets.audit import DEFAULT_CONFIGURATIONS as AUDIT_CONFIGURATIONS
        from slhmc_jax.targets.audit import audit_store

        path = self.dir / "target_audit.json"
        if path.exists():
            return json.loads(path.read_text())
        c = self.config
        self._log(f"target audit: {AUDIT_CONFIGURATIONS} stored states re-evaluated from a cold start")
        audit = audit_store(self.store, self.target, n_configurations=AUDIT_CONFIGURATIONS,
                            temperature_K=c.sampler.temperature_K, seed=c.run.seed).as_dict()
        write_json(path, audit)
        self._log(f"target audit: max |dE| {audit['max_abs_dE_meV']:.3g} meV = {audit['max_abs_dE_kT']:.3g} kT")
        return audit

    def run(self) -> Path:
        """All phases (see the module docstring); returns the path of report.json."""
        from slhmc_jax.targets.store import LabelStore
        from slhmc_jax.analysis.provenance import provenance

        t_start = time.perf_counter()
        c = self.config
        slhmc = self.slhmc_arm()
        iterations = [{"iteration": k, "proposal": "foundation" if k == 0 else f"slhmc_{k}",
                       "acceptance": run.acceptance, "target_calls": int(run.trace.target_evaluations),
                       "training_configurations_after": n}
                      for k, (run, n) in enumerate(zip(slhmc.runs, slhmc.training_sizes))]
        reference = self.reference(slhmc.models[-1]) if c.evaluation.reference == "independent" else None
        replicates = range(c.run.replicates)
        arms, relabel = {}, []
        if "foundation" in c.run.arms:
            arms["foundation"] = [self.evaluate("foundation", self.foundation, i) for i in replicates]
        if "relabel" in c.run.arms:
            relabel = [self.relabel_arm(len(slhmc.training_set), i) for i in replicates]
            arms["relabel"] = [self.evaluate("relabel", rep.model, i) for i, rep in enumerate(relabel)]
        if "slhmc" in c.run.arms:
            arms["slhmc"] = [self.evaluate("slhmc", m, i) for i, m in enumerate(self.slhmc_replicates(slhmc))]
        metadata = {"iterations": iterations, "replicates": c.run.replicates,
                    "dft_calls": {"total": int(len(self.store)), "store_rows": int(len(self.store))},
                    "budgets": budgets(self.store, slhmc, relabel, self.target_seconds.seconds)}
        if reference is not None:
            metadata["reference"] = reference.metadata()
            metadata["dft_calls"]["reference_store_rows"] = int(len(LabelStore(self.dir / "reference" / "labels.sqlite")))
        metadata["target_audit"] = self.target_audit()
        metadata["provenance"] = provenance(cfg.to_toml(c))
        path = self.report(slhmc.runs, arms, relabel[0].energies if relabel else None, metadata, reference)
        self._log(f"report: {path} ({time.perf_counter() - t_start:.0f} s in this session)")
        return path


def run(config: cfg.WorkflowConfig, run_dir, **kw) -> Path:
    """Run (or resume) the workflow of ``config`` in ``run_dir``; the path of report.json."""
    return Workflow(config, run_dir, **kw).run()
