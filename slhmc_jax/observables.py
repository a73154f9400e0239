"""MCMC diagnostics of SLHMC runs (ArviZ estimators).

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

import numpy as np

_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def _scalar_diagnostics(values: np.ndarray, n_target_calls) -> dict:
    import arviz as az

    n_chains, n_draws = values.shape
    out = {}
    if n_draws < 4 or not np.all(np.isfinite(values)) or np.ptp(values) == 0:
        return out
    ess = float(az.ess(values, method="bulk"))
    out["ess"] = ess
    out["iat"] = values.size / ess
    out["rhat"] = float(az.rhat(values)) if n_chains > 1 else float("nan")
    per = np.array([float(az.ess(v[None], method="bulk")) if np.ptp(v) > 0 else np.nan for v in values])
    out["ess_per_chain"] = per
    out["iat_per_chain"] = n_draws / per
    if n_target_calls:
        out["ess_per_target_call"] = ess / n_target_calls
    return out


def energy_error_distribution(errors, bins: int = 50) -> dict:
    """Distribution of ML-trajectory energy errors (eV): quantiles, mean, std, histogram.

    Args:
        errors: any shape, eV (non-finite entries are counted and left out).

    Returns:
        dict: n, n_non_finite, mean, std, mean_abs, quantiles {q: value}, histogram (counts, edges).
    """
    e = np.asarray(errors, np.float64).ravel()
    finite = e[np.isfinite(e)]
    out = {"n": int(e.size), "n_non_finite": int(e.size - finite.size)}
    if finite.size:
        counts, edges = np.histogram(finite, bins=bins)
        out.update(mean=float(finite.mean()), std=float(finite.std()), mean_abs=float(np.abs(finite).mean()),
                   quantiles={q: float(v) for q, v in zip(_QUANTILES, np.quantile(finite, _QUANTILES))},
                   histogram=(counts, edges))
    return out


def mcmc_diagnostics(values, accepted, n_target_calls=None, ml_energy_error=None) -> dict:
    """Diagnostics of scalar observables of many chains.

    Args:
        values: (n_chains, n_draws) array (e.g. target energy, eV), or a dict name -> such array.
        accepted: (n_chains, n_draws) bool, the Metropolis decisions.
        n_target_calls: target evaluations spent (for ESS per target call).
        ml_energy_error: optional (n_chains, n_hmc_draws) ML-trajectory energy errors, eV.

    Returns:
        dict with ``acceptance_per_chain`` (n_chains,), ``acceptance`` (pooled), and for the first
        (or only) observable ``ess``, ``iat``, ``rhat``, ``ess_per_chain``, ``iat_per_chain``,
        ``ess_per_target_call`` at the top level (left out when the observable is constant or
        has fewer than 4 draws); ``observables`` maps every name to those entries; and
        ``ml_energy_error`` (:func:`energy_error_distribution`) when errors are given.
    """
    named = dict(values) if isinstance(values, dict) else {"value": values}
    accepted = np.asarray(accepted)
    out = {"acceptance_per_chain": accepted.mean(1), "acceptance": float(accepted.mean())}
    per_obs = {k: _scalar_diagnostics(np.asarray(v, np.float64), n_target_calls) for k, v in named.items()}
    out["observables"] = per_obs
    out.update(next(iter(per_obs.values())))
    if ml_energy_error is not None:
        out["ml_energy_error"] = energy_error_distribution(ml_energy_error)
    return out
