"""The report a scientist reads: report.json, report.md and PNG figures from a run's stored frames.

:func:`analyze` turns a :class:`slhmc_jax.analysis.run_directory.RunData` (the target reference, each
arm's evaluation frames, the sampler traces) into an :class:`Analysis`: the structural
observables of every frame set (:mod:`slhmc_jax.analysis.observables`), each arm's distances to the
reference with moving-block bootstrap intervals, the importance-weight ESS of training sets that
carry source energies, and the sampler's diagnostics (:mod:`slhmc_jax.analysis.diagnostics`).
:func:`write_report` renders it:

- ``report.json``: ``verdict`` (sentences) and ``comparison.<control>-slhmc.<observable> =
  [delta, low, high]`` (:mod:`slhmc_jax.analysis.verdict`: paired bootstrap over replicates and frame
  blocks of W1(control) - W1(slhmc), ``comparison_details``: resolved, replicates);
  ``arms.<arm>.replicates``, ``arms.<arm>.target_calls = {energy, forces}`` (``metadata.budgets``);
  ``arms.<arm>.wasserstein.<observable> = [W1, ci_low, ci_high]`` (the unit
  is in the observable's name: ``nn_Ti-O_A`` in A, ``volume_A3`` in A^3, ``c_over_a`` none),
  ``arms.<arm>.rdf_distance.<a-b> = [D, ci_low, ci_high]`` (int |g_arm - g_ref| dr, A),
  ``arms.<arm>.means``, ``arms.<arm>.importance_ess``, ``reference`` (``reference.ess`` /
  ``reference.rhat``: per observable, of its per-frame mean), ``sampler``, ``observables`` (units
  and descriptions), ``figures``, ``settings``, ``metadata``; ``warnings``: the failed diagnostics
  (:mod:`slhmc_jax.analysis.report_warnings`: R-hat, ESS, stuck chains, a small reference, the
  target audit) as ``{"kind", "message"}``; ``target_audit`` (``RunData.metadata["target_audit"]``,
  :mod:`slhmc_jax.targets.audit`) or null; ``provenance`` (:mod:`slhmc_jax.analysis.provenance`:
  ``RunData.metadata["provenance"]`` where the run stored one, ``"recorded": "run"``, else this
  process's at report time, ``"recorded": "report"``, without a config hash);
- ``figures/*.png`` (matplotlib's Agg canvas, no display): RDF overlays per pair, nearest-
  neighbour distance histograms, cell-metric histograms (NPT), acceptance and target-energy
  traces per chain, the ML-trajectory energy-error histogram;
- ``report.md``: the verdict in words first, then the warnings (before any table), the tables (distances with intervals per
  arm and observable, means, sampler diagnostics), the target audit, the figures embedded, and
  the provenance last.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from slhmc_jax.analysis import observables as obs
from slhmc_jax.analysis import statistics as stats
from slhmc_jax.analysis.figures import colours, figure, hist_edges, save_figure
from slhmc_jax.analysis.formatting import formula, json_safe, symbol
from slhmc_jax.analysis.provenance import provenance
from slhmc_jax.analysis.report_markdown import report_markdown
from slhmc_jax.analysis.report_warnings import diagnostic_warnings, reference_statistics
from slhmc_jax.analysis.verdict import verdict
from slhmc_jax.analysis.run_directory import (
    Arm,
    RunData,
    read_frames,
    read_run_directory,
)
from slhmc_jax.files import atomic_write, write_json
from slhmc_jax.sampler.trajectory import Trajectory

CELL_METRICS = (
    ("a_A", "A", "lattice parameter a"),
    ("b_A", "A", "lattice parameter b"),
    ("c_A", "A", "lattice parameter c"),
    ("c_over_a", "", "axial ratio c/a"),
    ("volume_A3", "A^3", "cell volume"),
)


@dataclasses.dataclass(frozen=True)
class ReportSettings:
    """What to measure; None picks a default from the reference frames.

    Attributes:
        pairs: element pairs (a, b) for RDFs and nearest-neighbour distances. Default: every
            pair of distinct elements, heavier first (Ti-O, O-H), for both, plus like pairs
            (O-O) for RDFs.
        k: nearest neighbours per atom. Default 6 (the TiO6 octahedron) where periodic, else at
            most 6 and at most the b atoms there are.
        r_max_A: RDF range, A. Default 6 where periodic, else the largest interatomic distance
            the frames support.
        n_bins: RDF bins.
        n_bootstrap, confidence, seed: bootstrap intervals (:func:`slhmc_jax.analysis.observables.wasserstein`).
    """

    pairs: tuple | None = None
    k: int | None = None
    r_max_A: float | None = None
    n_bins: int = 200
    n_bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Distance:
    """A distance between two distributions and its bootstrap interval (unit of the observable)."""

    value: float
    ci_low: float
    ci_high: float
    form: str = "two-sided"  # or "upper bound": unresolved from 0, ci_low = 0 (statistics.DistanceInterval)

    def as_list(self) -> list:
        return [self.value, self.ci_low, self.ci_high]


def _distance(interval) -> Distance:
    """A :class:`Distance` from a :class:`slhmc_jax.analysis.statistics.DistanceInterval`."""
    return Distance(float(interval.value), float(interval.low), float(interval.high), interval.form)


@dataclasses.dataclass(frozen=True)
class Observable:
    """A scalar-valued observable: its report.json key, unit and meaning."""

    name: str
    unit: str
    description: str


@dataclasses.dataclass(frozen=True)
class SetObservables:
    """Observable samples of one frame set, per chain (draws in sampling order).

    Attributes:
        scalars: observable name -> list over chains of (n_frames, values per frame) arrays.
        rdf: pair label "a-b" -> list over chains of (n_frames, n_bins) per-frame g(r).
    """

    scalars: dict
    rdf: dict


@dataclasses.dataclass(frozen=True)
class ArmResult:
    """One arm against the reference.

    Attributes:
        name: arm name.
        n_chains, n_frames: its frames (per chain).
        wasserstein: observable name -> W1 to the reference with interval.
        rdf_distance: pair label -> int |g_arm - g_ref| dr with interval, A.
        means: observable name -> mean over all values.
        importance_ess: Kish ESS fraction of its training set reweighted to the target, or None.
    """

    name: str
    n_chains: int
    n_frames: int
    wasserstein: dict
    rdf_distance: dict
    means: dict
    importance_ess: float | None = None


@dataclasses.dataclass(frozen=True)
class SamplerSummary:
    """Acceptance and convergence of the reference run (target energy, per target call)."""

    n_chains: int
    n_steps: int
    acceptance: float
    acceptance_per_chain: tuple
    ess: float | None
    iat: float | None
    rhat: float | None
    ess_per_target_call: float | None
    target_evaluations: int | None  # configurations the target evaluated (report.json: n_target_calls)
    judged: int | None  # configurations judged, evaluations + store hits (report.json: n_judged)
    ml_energy_error: object | None  # slhmc_jax.analysis.diagnostics.EnergyErrorDistribution


@dataclasses.dataclass(frozen=True)
class Analysis:
    """The numbers and samples behind a report (see the module docstring)."""

    run: RunData
    settings: ReportSettings
    rdf_pairs: tuple
    nn_pairs: tuple
    observables: tuple
    r_A: np.ndarray
    reference: SetObservables
    arms: tuple  # of (ArmResult, SetObservables)
    sampler: SamplerSummary | None
    reference_stats: dict = dataclasses.field(default_factory=dict)  # observable -> ChainStatistics | None
    warnings: tuple = ()  # of report_warnings.DiagnosticWarning, most serious first
    provenance: dict = dataclasses.field(default_factory=dict)
    verdict: object = None  # analysis.verdict.Verdict, or None without an slhmc arm and a control


@dataclasses.dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_report`: figures as (path, title) pairs."""

    json: Path
    markdown: Path
    figures: tuple


# ----------------------------------------------------------------------------------------
# analysis (numbers)


def _resolve(run: RunData, settings: ReportSettings):
    """Pairs, k and r_max for these frames (defaults of :class:`ReportSettings`)."""
    numbers = run.reference.atomic_numbers
    periodic = any(run.reference.pbc)
    elements = sorted({int(z) for z in numbers}, reverse=True)
    count = {z: int(np.sum(numbers == z)) for z in elements}
    if settings.pairs:
        pairs = tuple((str(a), str(b)) for a, b in settings.pairs)
        rdf_pairs, nn_pairs = pairs, pairs
    else:
        unlike = [(symbol(a), symbol(b)) for i, a in enumerate(elements) for b in elements[i + 1 :]]
        like = [(symbol(a), symbol(a)) for a in elements if periodic or count[a] >= 2]
        rdf_pairs = tuple(unlike + like)
        nn_pairs = tuple(unlike) if unlike else tuple(like[:1])
    if settings.k is not None:
        k = int(settings.k)
    elif periodic:
        k = 6
    else:
        from ase.data import atomic_numbers

        k = min(6, *(count[atomic_numbers[b]] - (a == b) for a, b in nn_pairs)) if nn_pairs else 6
    if settings.r_max_A is not None:
        r_max = float(settings.r_max_A)
    elif periodic:
        r_max = 6.0
    else:
        sets = [run.reference] + [arm.frames for arm in run.arms]
        largest = min(float(obs.largest_interatomic_distance(s.frames()).max()) for s in sets)
        r_max = math.floor(largest * 100.0) / 100.0
    return rdf_pairs, nn_pairs, k, r_max


def _per_chain(values: np.ndarray, frames: Trajectory) -> list:
    """(n_chains * n_frames, ...) -> list over chains of (n_frames, values per frame)."""
    values = values.reshape(frames.n_chains, frames.n_frames, -1)
    return [values[c] for c in range(frames.n_chains)]


def _cell_metrics_apply(run: RunData) -> bool:
    if not all(run.reference.pbc):
        return False
    if run.ensemble == "npt":
        return True
    sets = [run.reference] + [arm.frames for arm in run.arms]
    return any(np.ptp(s.cells.reshape(-1, 9), axis=0).max() > 1e-9 for s in sets)


def _observe(frames: Trajectory, rdf_pairs, nn_pairs, k, r_max, n_bins, with_cells) -> tuple[SetObservables, np.ndarray]:
    flat = frames.frames()
    scalars, rdfs, r = {}, {}, None
    for a, b in nn_pairs:
        d = obs.nearest_neighbour_distances(flat, a, b, k)
        scalars[f"nn_{a}-{b}_A"] = _per_chain(d, frames)
    if with_cells:
        metrics = obs.cell_metrics(flat)
        for name, _, _ in CELL_METRICS:
            scalars[name] = _per_chain(metrics[name], frames)
    for a, b in rdf_pairs:
        r, g = obs.rdf_frames(flat, (a, b), r_max, n_bins)
        rdfs[f"{a}-{b}"] = _per_chain(g, frames)
    return SetObservables(scalars, rdfs), r


def _sampler_summary(run: RunData) -> SamplerSummary | None:
    from slhmc_jax.analysis.diagnostics import mcmc_diagnostics

    trace = run.sampler
    if trace is None:
        return None
    errors = None
    if trace.ml_energy_error_eV is not None:
        errors = trace.ml_energy_error_eV if trace.move is None else trace.ml_energy_error_eV[:, trace.move == 0]
    # every configuration judged cost one target call (in this process or an earlier one of the run);
    # traces written before `judged` was recorded fall back to this process's evaluations
    n_judged = trace.judged if trace.judged is not None else trace.target_evaluations
    diag = mcmc_diagnostics({"target_energy_eV": trace.target_energies_eV}, trace.accepted, n_judged, errors)
    stats = diag.observables["target_energy_eV"]
    return SamplerSummary(
        n_chains=int(trace.accepted.shape[0]),
        n_steps=int(trace.accepted.shape[1]),
        acceptance=diag.acceptance,
        acceptance_per_chain=tuple(float(a) for a in diag.acceptance_per_chain),
        ess=None if stats is None else stats.ess,
        iat=None if stats is None else stats.iat,
        rhat=None if stats is None else stats.rhat,
        ess_per_target_call=None if stats is None else stats.ess_per_target_call,
        target_evaluations=trace.target_evaluations,
        judged=n_judged,
        ml_energy_error=diag.ml_energy_error,
    )


def analyze(run: RunData, settings: ReportSettings = ReportSettings()) -> Analysis:
    """Observables of the reference and every arm, the arms' distances to it, sampler diagnostics."""
    rdf_pairs, nn_pairs, k, r_max = _resolve(run, settings)
    with_cells = _cell_metrics_apply(run)
    reference, r = _observe(run.reference, rdf_pairs, nn_pairs, k, r_max, settings.n_bins, with_cells)
    observables = [Observable(f"nn_{a}-{b}_A", "A", f"distances of each {a} atom to its {k} nearest {b} atoms") for a, b in nn_pairs]
    if with_cells:
        observables += [Observable(*m) for m in CELL_METRICS]
    boot = dict(n_bootstrap=settings.n_bootstrap, confidence=settings.confidence, seed=settings.seed)
    arms = []
    for arm in run.arms:
        samples, _ = _observe(arm.frames, rdf_pairs, nn_pairs, k, r_max, settings.n_bins, with_cells)
        w = {o.name: _distance(stats.wasserstein(reference.scalars[o.name], samples.scalars[o.name], **boot)) for o in observables}
        d = {p: _distance(stats.rdf_distance(reference.rdf[p], samples.rdf[p], r, **boot)) for p in reference.rdf}
        means = {o.name: float(np.mean(np.concatenate(samples.scalars[o.name]))) for o in observables}
        ess = None
        if arm.training is not None and run.temperature_K:
            ess = stats.importance_ess(arm.training.energies_target_eV, arm.training.energies_source_eV, run.temperature_K)
        arms.append((ArmResult(arm.name, arm.frames.n_chains, arm.frames.n_frames, w, d, means, ess), samples))
    resolved = dataclasses.replace(settings, pairs=rdf_pairs, k=k, r_max_A=r_max)
    sampler = _sampler_summary(run)
    ref_stats = reference_statistics({o.name: reference.scalars[o.name] for o in observables})
    stored = run.metadata.get("provenance") if isinstance(run.metadata, dict) else None
    # the run's own record where the caller stored one, else this process's (no config hash)
    prov = {"recorded": "run", **stored} if isinstance(stored, dict) else {"recorded": "report", **provenance()}
    paired = verdict(run, nn_pairs, k, **boot) if nn_pairs else None
    return Analysis(run, resolved, rdf_pairs, nn_pairs, tuple(observables), r, reference, tuple(arms), sampler,
                    ref_stats, diagnostic_warnings(run, sampler, ref_stats), prov, paired)


# ----------------------------------------------------------------------------------------
# report.json


def _sampler_dict(s: SamplerSummary | None) -> dict | None:
    """report.json's ``sampler``: the reference run's acceptance, ESS, R-hat, calls and ML energy errors."""
    if s is None:
        return None
    err = s.ml_energy_error
    return {
        "n_chains": s.n_chains,
        "n_steps": s.n_steps,
        "acceptance": s.acceptance,
        "acceptance_per_chain": list(s.acceptance_per_chain),
        "target_energy_ess": s.ess,
        "target_energy_iat_steps": s.iat,
        "target_energy_rhat": s.rhat,
        "ess_per_target_call": s.ess_per_target_call,
        "n_target_calls": s.target_evaluations,
        "n_judged": s.judged,
        "ml_energy_error_eV": None
        if err is None
        else {"n": err.n, "n_non_finite": err.n_non_finite, "mean": err.mean, "std": err.std, "mean_abs": err.mean_abs,
              "quantiles": {str(q): v for q, v in err.quantiles.items()}},
    }


def report_dict(analysis: Analysis, figures=()) -> dict:
    """The content of report.json (structure in the module docstring)."""
    run = analysis.run
    ref_all = {o.name: np.concatenate(analysis.reference.scalars[o.name]) for o in analysis.observables}
    replicates = {a.name: a.n_replicates for a in run.arms}
    budgets = run.metadata.get("budgets", {}) if isinstance(run.metadata, dict) else {}
    sampler = _sampler_dict(analysis.sampler)
    out = {
        "format": "slhmc-report",
        "version": 1,
        "verdict": [] if analysis.verdict is None else analysis.verdict.sentences(),
        "comparison": {} if analysis.verdict is None else analysis.verdict.as_dict(),
        "comparison_details": {} if analysis.verdict is None else analysis.verdict.details(),
        "warnings": [w.as_dict() for w in analysis.warnings],
        "system": {
            "formula": formula(run.reference.atomic_numbers),
            "n_atoms": run.reference.n_atoms,
            "pbc": [bool(p) for p in run.reference.pbc],
        },
        "temperature_K": run.temperature_K,
        "ensemble": run.ensemble,
        "pressure_GPa": run.pressure_GPa,
        "observables": {
            **{o.name: {"unit": o.unit, "description": o.description} for o in analysis.observables},
            **{f"rdf_{p}": {"unit": "A", "description": f"int_0^r_max |g_arm(r) - g_ref(r)| dr of the {p} partial RDF"}
               for p in analysis.reference.rdf},
        },
        "reference": {
            "n_chains": run.reference.n_chains,
            "n_frames": run.reference.n_frames,
            "means": {k: float(v.mean()) for k, v in ref_all.items()},
            "std": {k: float(v.std()) for k, v in ref_all.items()},
            "ess": {k: None if v is None else v.ess for k, v in analysis.reference_stats.items()},
            "rhat": {k: None if v is None else v.rhat for k, v in analysis.reference_stats.items()},
        },
        "arms": {
            a.name: {
                "n_chains": a.n_chains,
                "n_frames": a.n_frames,
                "wasserstein": {k: d.as_list() for k, d in a.wasserstein.items()},
                "rdf_distance": {k: d.as_list() for k, d in a.rdf_distance.items()},
                "means": a.means,
                "importance_ess": a.importance_ess,
                "replicates": replicates.get(a.name, 1),
                "target_calls": budgets.get(a.name, {}).get("target_calls"),
            }
            for a, _ in analysis.arms
        },
        "sampler": sampler,
        "figures": [str(Path("figures") / Path(p).name) for p, _ in figures],
        "settings": {
            "pairs": [list(p) for p in analysis.rdf_pairs],
            "nearest_neighbour_pairs": [list(p) for p in analysis.nn_pairs],
            "k": analysis.settings.k,
            "r_max_A": analysis.settings.r_max_A,
            "n_bins": analysis.settings.n_bins,
            "n_bootstrap": analysis.settings.n_bootstrap,
            "confidence": analysis.settings.confidence,
            "seed": analysis.settings.seed,
        },
        "target_audit": run.metadata.get("target_audit"),
        "provenance": analysis.provenance,
        "metadata": {k: v for k, v in run.metadata.items() if k not in ("provenance", "target_audit")},
    }
    return json_safe(out)


# ----------------------------------------------------------------------------------------
# figures (:mod:`slhmc_jax.analysis.figures`: matplotlib's Agg canvas, written atomically)


def _fig_rdf(analysis: Analysis, pair: str, path: Path) -> str:
    fig = figure()
    ax = fig.add_subplot()
    r = analysis.r_A
    ref = np.concatenate(analysis.reference.rdf[pair]).mean(axis=0)
    ax.plot(r, ref, color="black", lw=2.2, label=f"target reference ({analysis.run.reference.n_chains * analysis.run.reference.n_frames} frames)")
    for (arm, samples), colour in zip(analysis.arms, colours(len(analysis.arms))):
        g = np.concatenate(samples.rdf[pair]).mean(axis=0)
        d = arm.rdf_distance[pair]
        ax.plot(r, g, color=colour, lw=1.4, label=f"{arm.name} (int|dg|dr = {d.value:.3g} A)")
    a, b = pair.split("-")
    title = f"Partial radial distribution function g$_{{{a}-{b}}}$(r)"
    ax.set_title(title)
    ax.set_xlabel("r (Å)")
    ax.set_ylabel(f"g$_{{{a}-{b}}}$(r) (dimensionless)")
    ax.set_xlim(0, analysis.settings.r_max_A)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return f"Partial RDF g_{a}-{b}(r)"


def _fig_nn(analysis: Analysis, name: str, a: str, b: str, path: Path) -> str:
    fig = figure()
    ax = fig.add_subplot()
    ref = np.concatenate(analysis.reference.scalars[name]).ravel()
    arms = [(arm, np.concatenate(s.scalars[name]).ravel()) for arm, s in analysis.arms]
    edges = hist_edges([ref] + [v for _, v in arms])
    ax.hist(ref, bins=edges, density=True, histtype="stepfilled", color="0.75", edgecolor="black", lw=1.5,
            label=f"target reference (mean {ref.mean():.4f} Å)")
    for (arm, v), colour in zip(arms, colours(len(arms))):
        w = arm.wasserstein[name]
        ax.hist(v, bins=edges, density=True, histtype="step", color=colour, lw=1.6,
                label=f"{arm.name} (mean {v.mean():.4f} Å, W1 {w.value:.2g} Å)")
    title = f"{a}-{b} nearest-neighbour distances (k = {analysis.settings.k})"
    ax.set_title(title)
    ax.set_xlabel(f"{a}-{b} distance (Å)")
    ax.set_ylabel("probability density (1/Å)")
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return title


def _fig_cells(analysis: Analysis, path: Path) -> str:
    fig = figure(width=10.0, height=6.0)
    axes = fig.subplots(2, 3).ravel()
    for ax, (name, unit, description) in zip(axes, CELL_METRICS):
        ref = np.concatenate(analysis.reference.scalars[name]).ravel()
        arms = [(arm, np.concatenate(s.scalars[name]).ravel()) for arm, s in analysis.arms]
        edges = hist_edges([ref] + [v for _, v in arms], bins=30)
        ax.hist(ref, bins=edges, density=True, histtype="stepfilled", color="0.75", edgecolor="black", label="target reference")
        for (arm, v), colour in zip(arms, colours(len(arms))):
            ax.hist(v, bins=edges, density=True, histtype="step", color=colour, lw=1.5, label=arm.name)
        label = {"A": "Å", "A^3": "Å$^3$"}.get(unit, "")
        ax.set_title(description)
        ax.set_xlabel(f"{name.split('_')[0] if unit else 'c/a'}" + (f" ({label})" if label else " (dimensionless)"))
        ax.set_ylabel("probability density" + (f" (1/{label})" if label else ""))
        ax.legend(fontsize=7)
    axes[-1].axis("off")
    title = "Cell metrics (NPT)"
    fig.suptitle(title)
    save_figure(fig, path)
    return title


def _fig_traces(analysis: Analysis, path: Path) -> str:
    from matplotlib.ticker import MaxNLocator

    trace = analysis.run.sampler
    fig = figure(width=7.5, height=6.0)
    ax_acc, ax_e = fig.subplots(2, 1, sharex=True)
    steps = np.arange(1, trace.accepted.shape[1] + 1)
    e_min = float(np.min(trace.target_energies_eV))
    for c, colour in zip(range(trace.accepted.shape[0]), colours(trace.accepted.shape[0])):
        running = np.cumsum(trace.accepted[c]) / steps
        ax_acc.plot(steps, running, color=colour, lw=1.3, label=f"chain {c} ({running[-1]:.2f})")
        ax_e.plot(steps, trace.target_energies_eV[c] - e_min, color=colour, lw=1.1, marker=".", ms=3, label=f"chain {c}")
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.set_title("Running acceptance fraction per chain")
    ax_acc.set_ylabel("accepted fraction (dimensionless)")
    ax_acc.legend(fontsize=7, ncol=2)
    ax_e.set_title(f"Target energy per chain (minus the lowest of all chains, {e_min:.4f} eV)")
    ax_e.set_xlabel("production step")
    ax_e.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_e.set_ylabel("E_target - min (eV)")
    ax_e.legend(fontsize=7, ncol=2)
    title = "Sampler traces: acceptance and target energy per chain"
    fig.suptitle(title)
    save_figure(fig, path)
    return title


def _fig_energy_error(analysis: Analysis, path: Path) -> str:
    trace = analysis.run.sampler
    errors = trace.ml_energy_error_eV if trace.move is None else trace.ml_energy_error_eV[:, trace.move == 0]
    e = errors[np.isfinite(errors)].ravel()
    fig = figure()
    ax = fig.add_subplot()
    stats = analysis.sampler.ml_energy_error
    ax.hist(e, bins=min(50, max(5, e.size // 4)), color="tab:blue", alpha=0.8,
            label=f"{e.size} HMC trajectories: mean {stats.mean:.3g} eV, std {stats.std:.3g} eV")
    ax.axvline(0.0, color="black", lw=1, ls="--", label="exact integration (0 eV)")
    title = "ML-trajectory energy error (proposal's own dynamics)"
    ax.set_title(title)
    ax.set_xlabel("dH_ML = E_ML' + K' - E_ML - K (eV)")
    ax.set_ylabel("count (trajectories)")
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return title


def write_figures(analysis: Analysis, directory) -> tuple:
    """Write every figure that applies; returns ((path, title), ...)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for pair in analysis.reference.rdf:
        p = directory / f"rdf_{pair}.png"
        out.append((p, _fig_rdf(analysis, pair, p)))
    for a, b in analysis.nn_pairs:
        p = directory / f"nn_{a}-{b}.png"
        out.append((p, _fig_nn(analysis, f"nn_{a}-{b}_A", a, b, p)))
    if any(o.name == "volume_A3" for o in analysis.observables):
        p = directory / "cell_metrics.png"
        out.append((p, _fig_cells(analysis, p)))
    if analysis.sampler is not None:
        p = directory / "sampler_traces.png"
        out.append((p, _fig_traces(analysis, p)))
        err = analysis.sampler.ml_energy_error
        if err is not None and err.n > err.n_non_finite:
            p = directory / "ml_energy_error.png"
            out.append((p, _fig_energy_error(analysis, p)))
    return tuple(out)


# ----------------------------------------------------------------------------------------
# entry points


def write_report(analysis: Analysis, out_dir, *, figures=None, extra: dict | None = None) -> ReportFiles:
    """Write report.json, report.md and figures/*.png into ``out_dir``, each file once and atomically.

    Args:
        figures: ((path, title), ...) already drawn by :func:`write_figures` into ``out_dir/figures``
            (default: draw them now).
        extra: top-level keys appended to report.json (the workflow's final time breakdown).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if figures is None:
        figures = write_figures(analysis, out / "figures")
    json_path, md_path = out / "report.json", out / "report.md"
    write_json(json_path, report_dict(analysis, figures) | json_safe(extra or {}))
    atomic_write(md_path, report_markdown(analysis, figures))
    return ReportFiles(json_path, md_path, figures)


def report_run_directory(run_dir, out_dir=None, settings: ReportSettings = ReportSettings()) -> ReportFiles:
    """Rebuild the report of a run directory from what it stores (into the directory by default)."""
    run = read_run_directory(run_dir)
    return write_report(analyze(run, settings), run_dir if out_dir is None else out_dir)


def compare_trajectories(trajectory, reference, out_dir, settings: ReportSettings = ReportSettings(), *, arm_name=None) -> ReportFiles:
    """Compare any trajectory (extxyz, anything ASE reads, or a frame .npz) with a reference one."""
    frames = read_frames(trajectory)
    ref = read_frames(reference)
    name = arm_name or Path(trajectory).stem.replace(" ", "_") or "trajectory"
    if not name[0].isalnum():
        name = "trajectory"
    name = "".join(ch if ch.isalnum() or ch in "_.-" else "_" for ch in name)
    run = RunData(reference=ref, arms=(Arm(name, frames),), ensemble="nvt")
    return write_report(analyze(run, settings), out_dir)
