"""MCMC diagnostics of SLHMC runs (ArviZ estimators), as typed results.

- acceptance rate per chain and pooled;
- effective sample size (ArviZ ``ess``, rank-normalised bulk ESS, Geyer's initial monotone
  sequence over the autocorrelation of all chains), pooled and per chain, and per target call;
- integrated autocorrelation time tau_int = n_draws / ESS (per chain: n_draws_chain / ESS_chain;
  pooled: n_chains * n_draws / ESS), in MC steps; for an AR(1) series with coefficient phi,
  tau_int = (1 + phi) / (1 - phi);
- split R-hat (ArviZ ``rhat``, rank-normalised split R-hat of Vehtari et al. 2021);
- distribution of the ML-trajectory energy error dH_ML = E_ML(x') + K' - E_ML(x) - K
  (quantiles, histogram): the integration error of the proposal model's own dynamics.
"""

from __future__ import annotations

import dataclasses

import numpy as np

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


@dataclasses.dataclass(frozen=True)
class ChainStatistics:
    """Convergence statistics of one scalar observable over many chains.

    Attributes:
        ess: pooled bulk effective sample size (draws).
        iat: pooled integrated autocorrelation time, n_chains * n_draws / ess (MC steps).
        rhat: rank-normalised split R-hat (NaN for a single chain).
        ess_per_chain: (n_chains,) ESS of each chain alone (NaN where a chain is constant).
        iat_per_chain: (n_chains,) n_draws / ess_per_chain (MC steps).
        ess_per_target_call: ess / (target evaluations spent), or None when the count is unknown.
    """

    ess: float
    iat: float
    rhat: float
    ess_per_chain: np.ndarray
    iat_per_chain: np.ndarray
    ess_per_target_call: float | None = None


@dataclasses.dataclass(frozen=True)
class EnergyErrorDistribution:
    """Distribution of ML-trajectory energy errors (eV).

    Attributes:
        n: entries given; n_non_finite: NaN/inf entries (left out of the rest).
        mean, std, mean_abs: eV (NaN when nothing is finite).
        quantiles: {q: value in eV} for q in :data:`QUANTILES`.
        histogram_counts: (bins,) counts; histogram_edges: (bins + 1,) eV.
    """

    n: int
    n_non_finite: int
    mean: float = float("nan")
    std: float = float("nan")
    mean_abs: float = float("nan")
    quantiles: dict = dataclasses.field(default_factory=dict)
    histogram_counts: np.ndarray | None = None
    histogram_edges: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class MCMCDiagnostics:
    """Acceptance and convergence of a many-chain run.

    Attributes:
        acceptance: pooled fraction of accepted moves.
        acceptance_per_chain: (n_chains,).
        observables: name -> :class:`ChainStatistics`, or None where the observable is constant,
            non-finite or has fewer than 4 draws (no estimate is possible).
        ml_energy_error: :class:`EnergyErrorDistribution` of the proposal trajectories, or None.
    """

    acceptance: float
    acceptance_per_chain: np.ndarray
    observables: dict
    ml_energy_error: EnergyErrorDistribution | None = None


def chain_statistics(values, n_judged: int | None = None) -> ChainStatistics | None:
    """ESS, IAT and R-hat of ``values`` (n_chains, n_draws); None where no estimate is possible.

    ``n_judged``: configurations judged (target evaluations + label-store hits; a hit is a call an
    earlier run paid), the denominator of ``ess_per_target_call``.
    """
    import arviz as az

    values = np.asarray(values, np.float64)
    if values.ndim == 1:
        values = values[None]
    n_chains, n_draws = values.shape
    if n_draws < 4 or not np.all(np.isfinite(values)) or np.ptp(values) == 0:
        return None
    ess = float(az.ess(values, method="bulk"))
    per = np.array([float(az.ess(v[None], method="bulk")) if np.ptp(v) > 0 else np.nan for v in values])
    return ChainStatistics(
        ess=ess,
        iat=values.size / ess,
        rhat=float(az.rhat(values)) if n_chains > 1 else float("nan"),
        ess_per_chain=per,
        iat_per_chain=n_draws / per,
        ess_per_target_call=ess / n_judged if n_judged else None,
    )


def energy_error_distribution(errors, bins: int = 50) -> EnergyErrorDistribution:
    """Quantiles, moments and histogram of ML-trajectory energy errors (any shape, eV)."""
    e = np.asarray(errors, np.float64).ravel()
    finite = e[np.isfinite(e)]
    if not finite.size:
        return EnergyErrorDistribution(int(e.size), int(e.size))
    counts, edges = np.histogram(finite, bins=bins)
    return EnergyErrorDistribution(
        n=int(e.size),
        n_non_finite=int(e.size - finite.size),
        mean=float(finite.mean()),
        std=float(finite.std()),
        mean_abs=float(np.abs(finite).mean()),
        quantiles={q: float(v) for q, v in zip(QUANTILES, np.quantile(finite, QUANTILES))},
        histogram_counts=counts,
        histogram_edges=edges,
    )


def mcmc_diagnostics(values, accepted, n_judged=None, ml_energy_error=None) -> MCMCDiagnostics:
    """Diagnostics of scalar observables of many chains.

    Args:
        values: name -> (n_chains, n_draws) array (e.g. target energy, eV), or one such array
            (named "value").
        accepted: (n_chains, n_draws) bool, the Metropolis decisions.
        n_judged: configurations judged, target evaluations + store hits (for ESS per target call).
        ml_energy_error: optional ML-trajectory energy errors (any shape), eV.
    """
    named = dict(values) if isinstance(values, dict) else {"value": values}
    accepted = np.asarray(accepted)
    return MCMCDiagnostics(
        acceptance=float(accepted.mean()),
        acceptance_per_chain=accepted.mean(1),
        observables={k: chain_statistics(v, n_judged) for k, v in named.items()},
        ml_energy_error=None if ml_energy_error is None else energy_error_distribution(ml_energy_error),
    )
