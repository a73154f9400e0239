"""The verdict: is the model fine-tuned on the target's own distribution closer to it than the controls?

For every control arm C (``relabel``, ``foundation``, any other arm but ``slhmc``) and every
structural observable o, the paired difference of Wasserstein distances to the independent target
reference R,

    delta_C,o = mean_r W1(C_r, R) - mean_r W1(slhmc_r, R)    (r over each arm's replicates),

with its paired-bootstrap interval (:func:`slhmc_jax.analysis.statistics.paired_distance_difference`:
replicates and frame blocks resampled, the reference resampled once per draw and shared by both arms,
so its noise cancels). delta > 0: slhmc is closer. Where the interval contains 0 the comparison is
"not resolved at this budget": more replicates, longer evaluation runs or a longer reference would be
needed to tell; the report never reads an overlap of two separate intervals as a result.

The observables are the per-frame nearest-neighbour distances of the report's pairs
(:mod:`slhmc_jax.analysis.replicates`); target energies are not compared (an arm's evaluation frames
carry its model's energies, not the target's).
"""

from __future__ import annotations

import dataclasses

from slhmc_jax.analysis import replicates as rep
from slhmc_jax.analysis.statistics import DistanceDifference, paired_distance_difference

BASELINE = "slhmc"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Paired differences per comparison and observable.

    Attributes:
        differences: {"<control>-slhmc": {observable: DistanceDifference}}.
        units: {observable: unit} ("A" for distances).
        confidence: the intervals' nominal coverage.
    """

    differences: dict
    units: dict
    confidence: float

    def as_dict(self) -> dict:
        """report.json's ``comparison``: ``{"<control>-slhmc": {observable: [delta, low, high]}}`` (DESIGN.md)."""
        return {key: {name: [d.delta, d.low, d.high] for name, d in per_obs.items()}
                for key, per_obs in self.differences.items()}

    def details(self) -> dict:
        """Whether each difference is resolved and the replicates behind it (report.json's ``comparison_details``)."""
        return {key: {name: {"resolved": d.resolved, "replicates": [d.n_replicates_candidate, d.n_replicates_slhmc]}
                      for name, d in per_obs.items()}
                for key, per_obs in self.differences.items()}

    def sentences(self) -> list[str]:
        """The verdict in words, one sentence per comparison and observable (report.md opens with them)."""
        conf = int(round(100 * self.confidence))
        out = []
        for key, per_obs in self.differences.items():
            control = key[: -len(BASELINE) - 1]
            for name, d in per_obs.items():
                unit = self.units.get(name, "")
                numbers = f"delta W1 = {d.delta:.4g} {unit} [{d.low:.4g}, {d.high:.4g}] ({conf}% paired bootstrap, " \
                          f"{d.n_replicates_candidate} vs {d.n_replicates_slhmc} replicates)"
                if not d.resolved:
                    out.append(f"{name}: slhmc vs {control} is not resolved at this budget ({numbers}).")
                elif d.delta > 0:
                    out.append(f"{name}: slhmc is closer to the target's distribution than {control} ({numbers}).")
                else:
                    out.append(f"{name}: {control} is closer to the target's distribution than slhmc ({numbers}).")
        return out


def verdict(run, pairs, k: int, *, n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0) -> Verdict | None:
    """The paired verdict of ``run`` (a :class:`~slhmc_jax.analysis.run_directory.RunData`) over the
    nearest-neighbour observables of ``pairs`` (k neighbours), or None without an slhmc arm and a control."""
    names = [a.name for a in run.arms]
    controls = [n for n in names if n != BASELINE]
    if BASELINE not in names or not controls:
        return None
    arms = rep.arm_observables(run, pairs, k)
    reference = rep.reference_observables(run, pairs, k)
    differences = {}
    for control in controls:
        differences[f"{control}-{BASELINE}"] = {
            name: paired_distance_difference(arms[control][name], arms[BASELINE][name], reference[name],
                                             n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
            for name in reference
        }
    units = {name: "A" for name in reference}
    return Verdict(differences, units, confidence)


__all__ = ["Verdict", "verdict", "DistanceDifference"]
