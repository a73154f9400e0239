"""report.md: the tables of ``slhmc analyze`` a scientist reads, with the figures embedded.

The numbers come from :func:`slhmc_jax.analysis.report.analyze`; this module only writes them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slhmc_jax.analysis.formatting import formula, table_number
from slhmc_jax.analysis.report_warnings import AUDIT_MAX_KT, warnings_markdown


def verdict_markdown(verdict) -> list[str]:
    """The report's opening lines: the paired verdict in words (:mod:`slhmc_jax.analysis.verdict`)."""
    if verdict is None:
        return ["No verdict: the run has no slhmc arm to compare a control with.", ""]
    return [*verdict.sentences(), ""]


def distance_cell(d) -> str:
    """A distance and its interval: "W1 [low, high]", or "W1 (<= high)" where the interval is an upper
    bound (not resolved from 0; :class:`slhmc_jax.analysis.statistics.DistanceInterval`)."""
    if getattr(d, "form", "two-sided") == "upper bound":
        return f"{table_number(d.value, 3)} (<= {table_number(d.ci_high, 3)})"
    return f"{table_number(d.value, 3)} [{table_number(d.ci_low, 3)}, {table_number(d.ci_high, 3)}]"


def report_markdown(analysis, figures=()) -> str:
    """report.md of an :class:`slhmc_jax.analysis.report.Analysis`: summary, distance tables per arm and
    observable, sampler diagnostics, and ``figures`` ((path, title), ...) embedded."""
    run = analysis.run
    ref = run.reference
    conf = int(round(100 * analysis.settings.confidence))
    lines = [
        f"# SLHMC report: {formula(ref.atomic_numbers)}",
        "",
        *verdict_markdown(getattr(analysis, "verdict", None)),
        *warnings_markdown(getattr(analysis, "warnings", ())),
        f"- system: {ref.n_atoms} atoms, pbc {[bool(p) for p in ref.pbc]}; ensemble {run.ensemble.upper()}"
        + (f", {run.temperature_K:g} K" if run.temperature_K else "")
        + (f", {run.pressure_GPa:g} GPa" if run.pressure_GPa is not None else ""),
        f"- target reference: {ref.n_chains} chains x {ref.n_frames} frames (SLHMC production samples)",
        f"- arms: {', '.join(f'{a.name} ({a.n_chains} x {a.n_frames} frames)' for a, _ in analysis.arms) or 'none'}",
        f"- pairs {', '.join('-'.join(p) for p in analysis.rdf_pairs)}; k = {analysis.settings.k} nearest neighbours; "
        f"RDF on [0, {analysis.settings.r_max_A:g}) A in {analysis.settings.n_bins} bins",
        "",
    ]
    if analysis.arms:
        lines += [
            f"## Distances to the target reference ({conf}% circular-block bootstrap intervals; \"<= x\": an upper bound, the distance is not resolved from 0)",
            "",
            "Wasserstein distance W1 of each observable's distribution (unit of the observable) and, for the RDFs, "
            "int |g_arm - g_ref| dr (A). Smaller is closer to the target.",
            "",
            "| observable | " + " | ".join(a.name for a, _ in analysis.arms) + " |",
            "| --- | " + " | ".join("---" for _ in analysis.arms) + " |",
        ]
        for o in analysis.observables:
            cells = [distance_cell(a.wasserstein[o.name]) for a, _ in analysis.arms]
            lines.append(f"| W1 {o.name} ({o.unit or 'dimensionless'}) | " + " | ".join(cells) + " |")
        for p in analysis.reference.rdf:
            cells = [distance_cell(a.rdf_distance[p]) for a, _ in analysis.arms]
            lines.append(f"| RDF {p} (A) | " + " | ".join(cells) + " |")
        lines += ["", "## Means", "", "| observable | target reference | " + " | ".join(a.name for a, _ in analysis.arms) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in analysis.arms) + " |"]
        for o in analysis.observables:
            ref_mean = float(np.mean(np.concatenate(analysis.reference.scalars[o.name])))
            lines.append(f"| {o.name} | {ref_mean:.5g} | " + " | ".join(f"{a.means[o.name]:.5g}" for a, _ in analysis.arms) + " |")
        ess = [(a.name, a.importance_ess) for a, _ in analysis.arms if a.importance_ess is not None]
        if ess:
            lines += ["", "## Importance-weight ESS of the training sets", "",
                      "Kish ESS fraction of each training set reweighted from its source distribution to the target "
                      "(1: the set is target-distributed; small: few of its configurations survive reweighting).", ""]
            lines += [f"- {name}: {value:.4g}" for name, value in ess]
        lines.append("")
    if analysis.sampler is not None:
        s = analysis.sampler
        err = s.ml_energy_error
        lines += [
            "## Sampler diagnostics (reference run)",
            "",
            "| quantity | value |",
            "| --- | --- |",
            f"| chains x steps | {s.n_chains} x {s.n_steps} |",
            f"| acceptance (pooled) | {s.acceptance:.3f} |",
            f"| acceptance per chain | {', '.join(f'{a:.3f}' for a in s.acceptance_per_chain)} |",
            f"| target-energy ESS | {table_number(s.ess)} |",
            f"| target-energy IAT (steps) | {table_number(s.iat)} |",
            f"| split R-hat | {table_number(s.rhat)} |",
            f"| ESS per target call | {table_number(s.ess_per_target_call)} |",
        ]
        if err is not None and err.n > err.n_non_finite:
            lines.append(f"| ML energy error (eV): mean, std, mean abs | {table_number(err.mean)}, {table_number(err.std)}, {table_number(err.mean_abs)} |")
        lines.append("")
    lines += audit_markdown(run.metadata.get("target_audit"))
    if figures:
        lines += ["## Figures", ""]
        for path, title in figures:
            lines += [f"### {title}", "", f"![{title}](figures/{Path(path).name})", ""]
    lines += provenance_markdown(getattr(analysis, "provenance", None))
    return "\n".join(lines)


def audit_markdown(audit: dict | None) -> list[str]:
    """report.md's target-audit section (:mod:`slhmc_jax.targets.audit`), or no lines."""
    if not isinstance(audit, dict):
        return []
    kt = audit.get("max_abs_dE_kT")
    verdict = "n/a" if kt is None else ("above" if kt > AUDIT_MAX_KT else "within")
    lines = ["## Target audit", "",
             f"{audit.get('n')} stored target states re-evaluated from a cold start (no warm start); largest |dE| "
             f"{table_number(audit.get('max_abs_dE_meV'), 3)} meV = {table_number(kt, 3)} kT"
             + (f" at {audit['temperature_K']:g} K" if audit.get("temperature_K") else "")
             + f", {verdict} the {AUDIT_MAX_KT} kT a single-valued target allows"
             + (f"; {audit['target_calls']} extra target calls" if audit.get("target_calls") is not None else "") + "."]
    if audit.get("n_failed"):
        lines.append(f"{audit['n_failed']} of them failed to evaluate.")
    return lines + [""]


def provenance_markdown(prov: dict | None) -> list[str]:
    """report.md's closing provenance section (:mod:`slhmc_jax.analysis.provenance`), or no lines."""
    if not prov:
        return []
    own = prov.get("slhmc_jax") or {}
    commit = own.get("git_commit")
    where = "" if commit is None else f" (commit {commit[:12]}{', uncommitted changes' if own.get('git_dirty') else ''})"
    packages = ", ".join(f"{k} {v}" for k, v in (prov.get("packages") or {}).items() if v is not None)
    devices = ", ".join(f"{d['count']} x {d['kind']} ({d['platform']})" for d in (prov.get("devices") or [])) or "n/a"
    when = "when the run was made" if prov.get("recorded") == "run" else "when this report was written"
    lines = ["## Provenance", "", f"Recorded {when}.", "",
             f"- slhmc-jax {own.get('version')}{where}; Python {prov.get('python')}",
             f"- {packages}",
             f"- devices: {devices}; host: {(prov.get('host') or {}).get('cpu_count')} CPUs"]
    if prov.get("config_sha256"):
        lines.append(f"- config sha256: {prov['config_sha256']}")
    return lines + [""]
