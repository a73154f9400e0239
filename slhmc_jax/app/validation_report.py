"""What ``slhmc validate`` writes: validation.json's content, its figures and validation.md.

The layout of validation.json is in :mod:`slhmc_jax.app.validate`'s docstring. The numbers come
from :mod:`slhmc_jax.analysis.statistics` (:class:`~slhmc_jax.analysis.statistics.ObservableComparison`
per proposal and observable); the figures use :mod:`slhmc_jax.analysis.figures`, the conventions of
``slhmc analyze``'s report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slhmc_jax.analysis.figures import colours, figure, hist_edges, save_figure
from slhmc_jax.analysis.formatting import formula, table_number
from slhmc_jax.analysis.statistics import mean_standard_error
from slhmc_jax.app.validation_checks import ROTATION_TOLERANCE_KT, RotationCheck


def report_data(md, runs: dict, md_obs: dict, sl_obs: dict, comp: dict, *, thermostat_K: float, rotation,
                runtime: dict, finetune, settings: dict) -> dict:
    """validation.json's content (before ``figures``), in its key order.

    Args:
        md: the direct MD (:class:`slhmc_jax.sampler.md.MDResult`).
        runs: {proposal: :class:`slhmc_jax.app.validate.SlhmcRun`}.
        md_obs, sl_obs: per-frame observables of the MD and of each proposal's SLHMC run
            ({obs: (chains, frames)} and {proposal: {obs: (chains, frames)}}).
        comp: {proposal: {obs: ObservableComparison}}.
        thermostat_K: the MD thermostat's temperature, K. rotation: the rotation check's dict or None.
        runtime: seconds per phase. finetune: the fine-tuned proposal's record or None.
        settings: what was run (config, target, md, sampler, observables).
    """
    names = list(md_obs)
    ratio_s = {}
    md_sec = float(md.target_wall_s)
    for p, c in comp.items():
        sec = float(runs[p].target_wall_s)
        ratio_s[p] = {o: (c[o].ess_slhmc / sec) / (c[o].ess_md / md_sec) if sec > 0 and md_sec > 0 else None
                      for o in names}
    first = next(iter(comp.values())) if comp else {}
    per = lambda f_md, f_sl: {"direct_md": {o: f_md(first[o]) for o in names} if first else {},  # noqa: E731
                              **{p: {o: f_sl(c[o]) for o in names} for p, c in comp.items()}}
    return {
        "ess_per_target_call_ratio": {p: {o: c[o].ratio for o in names} for p, c in comp.items()},
        "ess_per_target_second_ratio": ratio_s,
        "ks_pvalue": {p: {o: c[o].ks_pvalue for o in names} for p, c in comp.items()},
        "ks_statistic": {p: {o: c[o].ks_statistic for o in names} for p, c in comp.items()},
        "wasserstein": {p: {o: list(c[o].wasserstein) for o in names} for p, c in comp.items()},
        "ess": per(lambda c: c.ess_md, lambda c: c.ess_slhmc),
        "ess_per_target_call": per(lambda c: c.ess_per_call_md, lambda c: c.ess_per_call_slhmc),
        "iat_steps": per(lambda c: c.iat_md, lambda c: c.iat_slhmc),
        "iat_batch_means_steps": per(lambda c: c.iat_batch_means_md, lambda c: c.iat_batch_means_slhmc),
        "ks_samples": per(lambda c: c.n_ks_md, lambda c: c.n_ks_slhmc),
        "means": {"direct_md": {o: float(np.mean(v)) for o, v in md_obs.items()},
                  **{p: {o: float(np.mean(v)) for o, v in obs_.items()} for p, obs_ in sl_obs.items()}},
        "target_calls": {"direct_md": int(md.judged), **{p: int(r.judged) for p, r in runs.items()}},
        "acceptance": {p: float(r.acceptance) for p, r in runs.items()},
        "kinetic_temperature_K": {"mean": float(np.mean(md.kinetic_temperature_K)),
                                  "standard_error": mean_standard_error(md.kinetic_temperature_K),
                                  "thermostat_K": thermostat_K},
        "rotation_check": rotation,
        "runtime_s": {k: round(float(v), 2) for k, v in runtime.items()},
        "target_seconds": {"direct_md": {"wall": md_sec, "cpu": float(md.target_cpu_s)},
                           **{p: {"wall": float(r.target_wall_s), "cpu": float(r.target_cpu_s)} for p, r in runs.items()}},
        "finetune": finetune,
        "system": {"formula": formula(md.atomic_numbers), "n_atoms": int(len(md.atomic_numbers)),
                   "pbc": [bool(v) for v in md.pbc]},
        "settings": settings,
    }


def write_figures(md_obs: dict, sl_obs: dict, comp: dict, directory) -> list:
    """One histogram overlay per observable: direct MD (filled) against each SLHMC proposal; [(path, title)]."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for name, ref in md_obs.items():
        fig = figure()
        ax = fig.add_subplot()
        ref = np.asarray(ref).ravel()
        arms = [(p, np.asarray(v[name]).ravel()) for p, v in sl_obs.items()]
        edges = hist_edges([ref] + [v for _, v in arms], bins=40)
        ax.hist(ref, bins=edges, density=True, histtype="stepfilled", color="0.75", edgecolor="black", lw=1.5,
                label=f"direct target MD ({ref.size} frames, mean {ref.mean():.4g})")
        for (p, v), colour in zip(arms, colours(len(arms))):
            c = comp[p][name]
            ax.hist(v, bins=edges, density=True, histtype="step", color=colour, lw=1.6,
                    label=f"SLHMC, {p} proposal (KS p {c.ks_pvalue:.2g}, ESS/call x{c.ratio:.3g})")
        unit = "Å" if name.endswith("_A") else "eV"
        title = f"{name}: direct target MD vs SLHMC"
        ax.set_title(title)
        ax.set_xlabel(f"{name[:-2] if name.endswith('_A') else name[:-3]} ({unit})")
        ax.set_ylabel(f"probability density (1/{unit})")
        ax.legend(fontsize=8)
        path = directory / f"validation_{name}.png"
        save_figure(fig, path)
        out.append((path, title))
    return out


def report_markdown(data: dict, figures=()) -> str:
    """validation.md: what was run, the per-observable comparison table, runtimes, figures."""
    md = data["settings"]["md"]
    lines = [
        f"# SLHMC validation against direct target MD: {data['system']['formula']}",
        "",
        f"- target: {data['settings']['target']}",
        f"- direct MD: {md['thermostat']} at {md['temperature_K']:g} K, dt {md['timestep_fs']:g} fs, "
        f"{md['n_replicas']} replicas x ({md['burn_in_steps']} burn-in + {md['n_steps']}) steps, "
        f"{data['target_calls']['direct_md']} target force calls; mean kinetic temperature "
        f"{data['kinetic_temperature_K']['mean']:.1f} +- {data['kinetic_temperature_K'].get('standard_error', float('nan')):.1f} K",
        "- SLHMC: " + "; ".join(f"{p} proposal, acceptance {a:.3f}, {data['target_calls'][p]} target calls"
                               for p, a in data["acceptance"].items()),
    ]
    rot = data.get("rotation_check")
    if rot:
        verdict = "invariant" if RotationCheck(**rot).invariant else "NOT invariant"
        lines.append(f"- rotation check ({rot['n_target_calls']} energy calls, not charged): the target energy spans "
                     f"{1e3 * rot['energy_spread_eV']:.2f} meV ({rot['energy_spread_eV'] / rot['kT_eV']:.2f} kT) over rigid "
                     f"rotations of the start geometry: {verdict} (tolerance {ROTATION_TOLERANCE_KT:g} kT)")
    lines += [
        "",
        "KS: two-sample Kolmogorov-Smirnov test on draws thinned by their integrated autocorrelation time "
        "(p > 0.05: no evidence that SLHMC and direct MD sample different distributions). W1: Wasserstein distance "
        "[95% moving-block bootstrap interval]. Ratio: ESS per target call of SLHMC / that of direct MD "
        "(every call counted; MD force calls included).",
        "",
        "| proposal | observable | KS D | KS p | W1 [95%] | ESS MD | ESS SLHMC | ESS/call ratio | ESS/target-second ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    n = table_number
    for p, values in data["ess_per_target_call_ratio"].items():
        for o, ratio in values.items():
            w = data["wasserstein"][p][o]
            lines.append(f"| {p} | {o} | {n(data['ks_statistic'][p][o], 3)} | {n(data['ks_pvalue'][p][o], 3)} | "
                         f"{n(w[0], 3)} [{n(w[1], 3)}, {n(w[2], 3)}] | {n(data['ess']['direct_md'][o])} | "
                         f"{n(data['ess'][p][o])} | {n(ratio, 3)} | {n(data['ess_per_target_second_ratio'][p][o], 3)} |")
    if data.get("finetune"):
        f = data["finetune"]
        lines += ["", f"Fine-tuned proposal: the foundation fine-tuned on {f['structures']} direct-MD frames (their target "
                      f"energies and forces; {f['extra_target_calls']} extra target calls, not charged to its ratio)."]
    lines += ["", "## Runtime (s)", "", "| phase | seconds |", "| --- | --- |"]
    lines += [f"| {k} | {v:.1f} |" for k, v in data["runtime_s"].items()]
    if figures:
        lines += ["", "## Figures", ""]
        for path, title in figures:
            lines += [f"### {title}", "", f"![{title}](figures/{Path(path).name})", ""]
    return "\n".join(lines) + "\n"
