"""MCMC diagnostics (ArviZ estimators): acceptance, IAT, ESS (+ per target call), split R-hat."""

from __future__ import annotations

import numpy as np


def mcmc_diagnostics(values, accepted, n_target_calls=None) -> dict:
    """Diagnostics of a scalar observable.

    Args:
        values: (n_chains, n_draws) observable (e.g. target energy, eV).
        accepted: (n_chains, n_draws) bool.
        n_target_calls: target evaluations spent (for ESS per call).

    Returns:
        dict with acceptance per chain and pooled, ess (bulk, pooled), iat = n_draws_total / ess,
        ess_per_target_call, split R-hat (rank-normalised, ArviZ), per-chain ess.
    """
    import arviz as az

    values = np.asarray(values, np.float64)
    accepted = np.asarray(accepted)
    n_chains, n_draws = values.shape
    out = {"acceptance_per_chain": accepted.mean(1), "acceptance": float(accepted.mean())}
    if n_draws >= 4 and np.ptp(values) > 0:
        ess = float(az.ess(values, method="bulk"))
        out["ess"] = ess
        out["iat"] = values.size / ess
        out["rhat"] = float(az.rhat(values)) if n_chains > 1 else float("nan")
        out["ess_per_chain"] = np.array([float(az.ess(v[None], method="bulk")) if np.ptp(v) > 0 else np.nan for v in values])
        if n_target_calls:
            out["ess_per_target_call"] = ess / n_target_calls
    return out
