"""Coverage of the distance intervals by simulation: ``wasserstein`` and ``paired_distance_difference``.

Samples are AR(1) chains x_t = phi x_(t-1) + sqrt(1 - phi^2) e_t with a N(mu, 1) marginal and
integrated autocorrelation time tau = (1 + phi) / (1 - phi) draws, shaped like the sampler's output
(several chains of a few hundred draws). For two such samples shifted by mu, W1 = |mu| exactly (equal
variances), so every interval's coverage is known:

- ``wasserstein``: x ~ N(0, 1), y ~ N(mu, 1), 4 chains x 250 draws each, mu = 0 (covered when the
  lower end is 0) and mu > 0 (covered when low <= mu <= high), tau = 1, 5, 20 (tau estimated from
  the data, as the report does).
- ``paired_distance_difference``: 3 replicates per arm and one reference, each 4 chains x 250 draws,
  all tau = 5; candidate replicates ~ N(mu_c + b_r, 1), slhmc ~ N(mu_s + b_r, 1), reference N(0, 1),
  b_r ~ N(0, sigma_b) a replicate's own offset (a fine-tuning run's spread). The true
  delta = E|mu_c + b| - E|mu_s + b| (E|N(m, s^2)| = s sqrt(2/pi) exp(-m^2 / 2s^2) + m (1 - 2 Phi(-m/s))).
  The unpaired interval (reference resampled independently per arm) on the same data gives the
  width ratio that pairing buys.

Prints a table (nominal, measured coverage with its binomial standard error sqrt(p (1 - p) / n),
repetitions, mean interval width, share of intervals that exclude 0); never asserts. Seeds are fixed
(``--seed``); ``--quick`` runs 200 repetitions of the main cases (100 of the paired ones; about
five minutes on one busy core).

    python benchmarks/coverage.py --quick --json coverage.json
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

# this file's name is that of the ``coverage`` package, which numba imports: keep benchmarks/ off the path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np
from scipy.stats import norm

from slhmc_jax.analysis import statistics as st
from slhmc_jax.files import write_json

N_CHAINS, N_DRAWS = 4, 250


def ar1_chains(tau: float, mu: float, rng: np.random.Generator, n_chains: int = N_CHAINS, n_draws: int = N_DRAWS):
    """n_chains AR(1) chains (list of (n_draws,)) with marginal N(mu, 1) and IAT tau, started stationary."""
    phi = (tau - 1.0) / (tau + 1.0)
    e = rng.standard_normal((n_chains, n_draws))
    x = np.empty_like(e)
    x[:, 0] = e[:, 0]
    s = math.sqrt(1.0 - phi * phi)
    for t in range(1, n_draws):
        x[:, t] = phi * x[:, t - 1] + s * e[:, t]
    return list(x + mu)


def mean_abs_normal(m: float, s: float) -> float:
    """E|X| for X ~ N(m, s^2) (|m| for s = 0)."""
    if s == 0:
        return abs(m)
    return s * math.sqrt(2 / math.pi) * math.exp(-m * m / (2 * s * s)) + m * (1 - 2 * norm.cdf(-m / s))


def _summary(case: str, tau: float, truth: float, hits, widths, resolved, n_bootstrap: int, seconds: float,
             confidence: float, extra=None) -> dict:
    n = len(hits)
    p = float(np.mean(hits))
    row = {"case": case, "tau": tau, "truth": truth, "nominal": confidence, "coverage": p,
           "se": math.sqrt(max(p * (1 - p), 1.0 / n) / n), "repetitions": n, "mean_width": float(np.mean(widths)),
           "excludes_zero": float(np.mean(resolved)), "n_bootstrap": n_bootstrap, "seconds": seconds}
    row.update(extra or {})
    return row


def wasserstein_coverage(tau: float, mu: float, repetitions: int, n_bootstrap: int = 500, confidence: float = 0.95,
                         seed: int = 0, interval=None) -> dict:
    """Coverage of W1 = |mu| by ``interval`` (default :func:`slhmc_jax.analysis.statistics.wasserstein`)."""
    interval = interval or st.wasserstein
    rng = np.random.default_rng([seed, int(tau * 10), int(mu * 1000)])
    hits, widths, resolved = [], [], []
    start = time.perf_counter()
    for i in range(repetitions):
        x, y = ar1_chains(tau, 0.0, rng), ar1_chains(tau, mu, rng)
        _, low, high = interval(x, y, n_bootstrap=n_bootstrap, confidence=confidence, seed=i)
        hits.append(low <= abs(mu) <= high)
        widths.append(high - low)
        resolved.append(low > 0)
    return _summary("W1", tau, abs(mu), hits, widths, resolved, n_bootstrap, time.perf_counter() - start, confidence)


def paired_coverage(mu_candidate: float, mu_slhmc: float, repetitions: int, *, tau: float = 5.0, n_replicates: int = 3,
                    sigma_between: float = 0.0, n_bootstrap: int = 500, confidence: float = 0.95, seed: int = 0) -> dict:
    """Coverage of the true delta by the paired interval; the unpaired interval's mean width beside it."""
    rng = np.random.default_rng([seed, int(mu_candidate * 1000), int(mu_slhmc * 1000), int(sigma_between * 1000)])
    truth = mean_abs_normal(mu_candidate, sigma_between) - mean_abs_normal(mu_slhmc, sigma_between)
    hits, widths, resolved, unpaired_widths, unpaired_hits = [], [], [], [], []
    start = time.perf_counter()
    for i in range(repetitions):
        def arm(mu):
            return [ar1_chains(tau, mu + sigma_between * rng.standard_normal(), rng) for _ in range(n_replicates)]

        cand, slhmc, ref = arm(mu_candidate), arm(mu_slhmc), ar1_chains(tau, 0.0, rng)
        d = st.paired_distance_difference(cand, slhmc, ref, n_bootstrap=n_bootstrap, confidence=confidence, seed=i)
        u = st._distance_difference(cand, slhmc, ref, iat=None, n_bootstrap=n_bootstrap, confidence=confidence,
                                    seed=i, paired=False)
        hits.append(d.low <= truth <= d.high)
        widths.append(d.high - d.low)
        resolved.append(d.resolved)
        unpaired_widths.append(u.high - u.low)
        unpaired_hits.append(u.low <= truth <= u.high)
    extra = {"mu_candidate": mu_candidate, "mu_slhmc": mu_slhmc, "sigma_between": sigma_between,
             "n_replicates": n_replicates, "unpaired_mean_width": float(np.mean(unpaired_widths)),
             "unpaired_coverage": float(np.mean(unpaired_hits))}
    case = f"paired c={mu_candidate:g} s={mu_slhmc:g} sb={sigma_between:g}"
    return _summary(case, tau, truth, hits, widths, resolved, n_bootstrap, time.perf_counter() - start, confidence, extra)


def run(quick: bool, seed: int) -> list[dict]:
    reps, n_bootstrap = (200, 300) if quick else (500, 500)
    rows = []
    for tau in (1.0, 5.0, 20.0):
        for mu in ((0.0, 0.5) if quick else (0.0, 0.25, 0.5, 1.0)):
            rows.append(wasserstein_coverage(tau, mu, reps, n_bootstrap=n_bootstrap, seed=seed))
            _print_row(rows[-1])
    paired_cases = [(0.0, 0.0, 0.0), (0.5, 0.0, 0.0)]
    if not quick:
        paired_cases += [(0.75, 0.25, 0.0), (0.5, 0.0, 0.1), (0.0, 0.0, 0.1)]
    for mu_c, mu_s, sb in paired_cases:
        rows.append(paired_coverage(mu_c, mu_s, reps // 2 if quick else reps, sigma_between=sb, n_bootstrap=n_bootstrap,
                                    seed=seed))
        _print_row(rows[-1])
    return rows


HEADER = f"{'case':34s} {'tau':>4s} {'truth':>6s} {'nominal':>7s} {'coverage':>14s} {'reps':>5s} {'width':>7s} {'excl.0':>6s} {'unpaired width':>14s}"


def _print_row(r: dict) -> None:
    unpaired = f"{r['unpaired_mean_width']:.3f} ({r['unpaired_mean_width'] / r['mean_width']:.2f}x)" if "unpaired_mean_width" in r else ""
    print(f"{r['case']:34s} {r['tau']:4g} {r['truth']:6.3f} {r['nominal']:7.2f} {r['coverage']:7.3f} +- {r['se']:.3f}"
          f" {r['repetitions']:5d} {r['mean_width']:7.3f} {r['excludes_zero']:6.2f} {unpaired:>14s}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 repetitions of the main cases")
    parser.add_argument("--seed", type=int, default=2027)
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args(argv)
    print(f"AR(1) chains, {N_CHAINS} x {N_DRAWS} draws per sample; coverage +- binomial standard error")
    print(HEADER)
    rows = run(args.quick, args.seed)
    if args.json:
        write_json(args.json, {"rows": rows, "quick": args.quick, "seed": args.seed})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
