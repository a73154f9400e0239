"""Diagnostics that fail, said first: the warnings that open report.md and fill report.json's ``warnings``.

A report warns (:func:`diagnostic_warnings`) when

- ``rhat``: a split R-hat of the reference run is above :data:`RHAT_MAX` (1.01, Vehtari et al. 2021),
  the target energy's or a reference observable's;
- ``ess``: the reference's effective sample size is short of its target: the caller's verdict
  (``RunData.metadata["reference"]["short_of_min_ess"]``) where it gives one, else an observable
  (or the target energy) with ESS below :data:`MIN_ESS` draws;
- ``stuck_chain``: a chain accepted none of its moves, or its target energy (or, without
  traces, its frames) never changed;
- ``few_frames``: the reference holds fewer than :data:`MIN_REFERENCE_FRAMES` frames;
- ``target_audit``: stored target energies re-evaluated from a cold start
  (:mod:`slhmc_jax.targets.audit`, ``RunData.metadata["target_audit"]``) differ by more than
  :data:`AUDIT_MAX_KT` kT, or failed.

Each observable's ESS and R-hat (:func:`reference_statistics`) are those of its per-frame mean
(one number per frame: the mean of a frame's k nearest-neighbour distances, or a cell metric).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from slhmc_jax.analysis.diagnostics import chain_statistics
from slhmc_jax.analysis.formatting import table_number

RHAT_MAX = 1.01
MIN_ESS = 200.0
MIN_REFERENCE_FRAMES = 100
AUDIT_MAX_KT = 0.1


@dataclasses.dataclass(frozen=True)
class DiagnosticWarning:
    """One failed diagnostic: ``kind`` (rhat, ess, stuck_chain, few_frames, target_audit) and a sentence."""

    kind: str
    message: str

    def as_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message}


def reference_statistics(scalars: dict) -> dict:
    """name -> :class:`~slhmc_jax.analysis.diagnostics.ChainStatistics` (or None: no estimate) of the
    per-frame mean of each observable; ``scalars``: name -> list over chains of (n_frames, values)."""
    out = {}
    for name, chains in scalars.items():
        per_frame = np.stack([np.asarray(c, np.float64).reshape(len(c), -1).mean(axis=1) for c in chains])
        out[name] = chain_statistics(per_frame)
    return out


def _rhat_warning(sampler, stats: dict) -> DiagnosticWarning | None:
    values = [("target energy", None if sampler is None else sampler.rhat)]
    values += [(name, None if s is None else s.rhat) for name, s in stats.items()]
    high = [(name, r) for name, r in values if r is not None and np.isfinite(r) and r > RHAT_MAX]
    if not high:
        return None
    listed = ", ".join(f"{name} {r:.3f}" for name, r in high)
    shape = "" if sampler is None else f" ({sampler.n_chains} chains x {sampler.n_steps} steps)"
    return DiagnosticWarning("rhat", f"split R-hat above {RHAT_MAX} in the reference run{shape}: {listed}; "
                                     "its chains have not mixed, so its distribution is not yet the target's")


def _ess_warning(metadata: dict, sampler, stats: dict) -> DiagnosticWarning | None:
    reference = metadata.get("reference") if isinstance(metadata.get("reference"), dict) else {}
    if "short_of_min_ess" in reference:
        short = reference["short_of_min_ess"]
        if not short:
            return None
        target = reference.get("min_ess", MIN_ESS)
        if isinstance(short, dict):
            listed = ": " + ", ".join(f"{k} {table_number(v, 3)}" for k, v in short.items())
        elif isinstance(short, (list, tuple)):
            ess = reference.get("ess") if isinstance(reference.get("ess"), dict) else {}
            listed = ": " + ", ".join(f"{k} {table_number(ess.get(k), 3)}" if k in ess else str(k) for k in short)
        else:
            listed = ""
        return DiagnosticWarning("ess", f"reference ESS short of its target of {table_number(target, 3)} "
                                        f"effective draws{listed}")
    values = [("target energy", None if sampler is None else sampler.ess)]
    values += [(name, None if s is None else s.ess) for name, s in stats.items()]
    low = [(name, e) for name, e in values if e is not None and np.isfinite(e) and e < MIN_ESS]
    if not low:
        return None
    listed = ", ".join(f"{name} {e:.3g}" for name, e in low)
    return DiagnosticWarning("ess", f"reference ESS below {MIN_ESS:g} effective draws: {listed}; "
                                    "its distances and intervals rest on that few independent draws")


def _stuck_chains(run) -> list[str]:
    trace, ref = run.sampler, run.reference
    stuck = []
    if trace is not None:
        n_steps = trace.accepted.shape[1]
        for c in range(trace.accepted.shape[0]):
            if n_steps and not trace.accepted[c].any():
                stuck.append(f"chain {c} accepted none of its {n_steps} moves")
            elif n_steps > 1 and np.ptp(trace.target_energies_eV[c]) == 0:
                stuck.append(f"chain {c} kept one target energy over its {n_steps} steps")
        return stuck
    if ref.n_frames < 2:
        return stuck
    for c in range(ref.n_chains):
        same_e = ref.target_energies is not None and np.ptp(ref.target_energies[c]) == 0
        if same_e or np.all(ref.positions[c] == ref.positions[c, :1]):
            stuck.append(f"chain {c} stayed at one state over its {ref.n_frames} frames")
    return stuck


def _audit_warning(metadata: dict) -> DiagnosticWarning | None:
    audit = metadata.get("target_audit")
    if not isinstance(audit, dict):
        return None
    kt, mev = audit.get("max_abs_dE_kT"), audit.get("max_abs_dE_meV")
    failed = int(audit.get("n_failed") or 0)
    parts = []
    if kt is not None and np.isfinite(kt) and kt > AUDIT_MAX_KT:
        parts.append(f"stored target energies re-evaluated from a cold start differ by up to {mev:.3g} meV = "
                     f"{kt:.3g} kT (> {AUDIT_MAX_KT} kT, {audit.get('n')} states): the target is not single-valued "
                     "(warm starts or retries land on other SCF solutions)")
    if failed:
        parts.append(f"{failed} of the {audit.get('n')} audited states failed to evaluate from a cold start")
    return DiagnosticWarning("target_audit", "; ".join(parts)) if parts else None


def diagnostic_warnings(run, sampler, stats: dict) -> tuple[DiagnosticWarning, ...]:
    """The failed diagnostics of an analysis (see the module docstring), most serious first.

    Args:
        run: the :class:`~slhmc_jax.analysis.run_directory.RunData`.
        sampler: the analysis' :class:`~slhmc_jax.analysis.report.SamplerSummary`, or None.
        stats: :func:`reference_statistics` of the reference's observables.
    """
    metadata = run.metadata if isinstance(run.metadata, dict) else {}
    out = [_rhat_warning(sampler, stats), _ess_warning(metadata, sampler, stats)]
    stuck = _stuck_chains(run)
    if stuck:
        out.append(DiagnosticWarning("stuck_chain", "a reference chain is stuck at one state: " + "; ".join(stuck)))
    n = run.reference.n_chains * run.reference.n_frames
    if n < MIN_REFERENCE_FRAMES:
        out.append(DiagnosticWarning("few_frames", f"the reference holds {n} frames ({run.reference.n_chains} chains x "
                                                   f"{run.reference.n_frames}), fewer than {MIN_REFERENCE_FRAMES}"))
    out.append(_audit_warning(metadata))
    return tuple(w for w in out if w is not None)


def warnings_markdown(warnings) -> list[str]:
    """report.md's opening lines for ``warnings`` (none: no lines)."""
    if not warnings:
        return []
    lines = [f"**{len(warnings)} diagnostic warning{'s' if len(warnings) > 1 else ''}** (read before the tables):", ""]
    lines += [f"- WARNING ({w.kind}): {w.message}" for w in warnings]
    return lines + [""]
