"""slhmc_jax.analysis.statistics against closed forms and independent code.

W1 against scipy; bootstrap coverage on AR(1) series with a known shift; the block length and
variance ratio in closed form; importance ESS against the Gaussian closed form; the batch-means IAT
of AR(1) series and the two-sampler comparison of ``slhmc validate``.
"""

import math

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

import slhmc_jax  # noqa: F401  (x64)
from slhmc_jax.analysis import statistics as st
from slhmc_jax.units import KB_EV_PER_K


def _ar1(phi, n_series, n_draws, rng):
    eps = rng.standard_normal((n_series, n_draws))
    x = np.empty_like(eps)
    x[:, 0] = eps[:, 0]
    s = math.sqrt(1 - phi * phi)
    for t in range(1, n_draws):
        x[:, t] = phi * x[:, t - 1] + s * eps[:, t]
    return x


# ----------------------------------------------------------------------------------------
# Wasserstein distance and its interval


def test_wasserstein_equals_scipy_and_replicates_are_exact():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 1.0, size=(300, 4))  # 300 draws of 4 values each
    y = rng.normal(2.5, 1.2, size=(170, 3))
    w1, lo, hi = st.wasserstein(x, y, n_bootstrap=200)
    assert w1 == pytest.approx(wasserstein_distance(x.ravel(), y.ravel()), rel=1e-12)
    assert 0 <= lo <= w1 <= hi
    # a bootstrap replicate is the W1 of the draws weighted by how often they were taken
    base, _, _, replicate = st._w1_exact(x, y)
    assert base == pytest.approx(w1, rel=1e-12)
    wx, wy = rng.integers(0, 4, size=(3, 300)).astype(float), rng.integers(0, 4, size=(3, 170)).astype(float)
    expected = [wasserstein_distance(x.ravel(), y.ravel(), np.repeat(a, 4), np.repeat(b, 3)) for a, b in zip(wx, wy)]
    np.testing.assert_allclose(replicate(wx, wy), expected, rtol=1e-10)
    # many values: the quantile-grid replicates agree with the exact ones to the grid resolution
    grid_base, _, _, grid_replicate = st._w1_on_grid(x, y)
    assert abs(grid_base - w1) < 0.01 * w1
    np.testing.assert_allclose(grid_replicate(wx, wy), expected, rtol=0.02)
    # chains: blocks stay inside chains, the point value pools all chains
    w1_chains, _, _ = st.wasserstein([x[:150], x[150:]], y, n_bootstrap=200)
    assert w1_chains == pytest.approx(w1, rel=1e-12)


def _coverage(phi, n_draws, repetitions, n_bootstrap, shift=1.0, seed=2026):
    rng = np.random.default_rng(seed)
    x = _ar1(phi, repetitions, n_draws, rng)
    y = _ar1(phi, repetitions, n_draws, rng) + shift  # same marginal N(0, 1), shifted: W1 = shift
    hits, widths = 0, []
    for i in range(repetitions):
        _, lo, hi = st.wasserstein(x[i], y[i], n_bootstrap=n_bootstrap, seed=i)
        hits += lo <= shift <= hi
        widths.append(hi - lo)
    tau = (1 + phi) / (1 - phi)
    # with a shift of several standard errors W1 is the difference of the means, whose 95% interval
    # has width 2 * 1.96 * sqrt(2 tau / n)
    return hits / repetitions, np.mean(widths) / (2 * 1.96 * math.sqrt(2 * tau / n_draws))


def test_wasserstein_interval_covers_true_shift_of_ar1_samples():
    """200 repetitions, phi = 0.8 (tau = 9), 1000 draws per side, tau estimated from the data."""
    coverage, width_ratio = _coverage(phi=0.8, n_draws=1000, repetitions=200, n_bootstrap=500)
    assert 0.90 <= coverage <= 0.98, coverage
    assert 0.9 < width_ratio < 1.1, width_ratio


@pytest.mark.slow
def test_wasserstein_interval_coverage_strong_correlation():
    """phi = 0.9 (tau = 19), 2000 draws, 400 repetitions; an uncorrected block bootstrap covers about 91% here."""
    coverage, width_ratio = _coverage(phi=0.9, n_draws=2000, repetitions=400, n_bootstrap=1000)
    assert 0.90 <= coverage <= 0.98, coverage
    assert 0.9 < width_ratio < 1.1, width_ratio


def test_block_length_and_variance_ratio_closed_forms():
    assert st.block_length(1.0, 1000) == 1 and st.block_variance_ratio(1.0, 1) == 1.0
    assert st.block_length(9.0, 1000) < st.block_length(9.0, 8000) < st.block_length(19.0, 8000)
    # Bartlett-windowed AR(1) autocorrelation sum against its closed form
    tau, block = 9.0, 31
    phi = (tau - 1) / (tau + 1)
    closed = 1 + 2 * (phi * (1 - phi ** (block - 1)) / (1 - phi) - (phi - block * phi**block + (block - 1) * phi ** (block + 1)) / (block * (1 - phi) ** 2))
    assert st.block_variance_ratio(tau, block) == pytest.approx(closed / tau, rel=1e-12)


def test_rdf_distance_is_the_l1_distance_with_an_interval():
    rng = np.random.default_rng(3)
    r = (np.arange(50) + 0.5) * 0.1
    shape = np.exp(-((r - 2.0) ** 2) / 0.1)
    amp_x = 1.0 + 0.1 * _ar1(0.7, 1, 400, rng)[0]
    amp_y = 1.3 + 0.1 * _ar1(0.7, 1, 300, rng)[0]
    gx, gy = amp_x[:, None] * shape, amp_y[:, None] * shape
    d, lo, hi = st.rdf_distance(gx, gy, r, n_bootstrap=400)
    assert d == pytest.approx(np.sum(np.abs(gx.mean(0) - gy.mean(0))) * 0.1, rel=1e-12)
    truth = 0.3 * np.sum(shape) * 0.1
    assert lo < truth < hi and lo < d < hi
    # the interval's half-width is that of the mean amplitudes' difference (AR(1), tau = 17/3)
    tau = 1.7 / 0.3
    half = 1.96 * 0.1 * math.sqrt(tau / 400 + tau / 300) * np.sum(shape) * 0.1
    assert 0.7 < (hi - lo) / (2 * half) < 1.3


# ----------------------------------------------------------------------------------------
# importance ESS


def _kish_closed_form(d, sigma_t=1.0):
    """1 / E_s[(p_t / p_s)^2] for p_s = N(0, 1), p_t = N(d, sigma_t^2)."""
    a = 1 / sigma_t**2 - 0.5
    second = 1.0 / (math.sqrt(2 * math.pi) * sigma_t**2) * math.sqrt(math.pi / a) * math.exp(d * d / (sigma_t**4 * a) - d * d / sigma_t**2)
    return 1.0 / second


@pytest.mark.parametrize("d,sigma_t", [(0.5, 1.0), (1.0, 1.0), (0.7, 0.8)])
def test_importance_ess_matches_gaussian_closed_form(d, sigma_t):
    T = 300.0
    kT = KB_EV_PER_K * T
    x = np.random.default_rng(11).standard_normal(2_000_000)  # drawn from the source, exp(-E_s / kT)
    e_source = kT * x**2 / 2
    e_target = kT * (x - d) ** 2 / (2 * sigma_t**2) - 1234.5  # an offset between the functionals' scales
    frac = st.importance_ess(e_target, e_source, T)
    exact = _kish_closed_form(d, sigma_t)
    if sigma_t == 1.0:
        assert exact == pytest.approx(math.exp(-d * d), rel=1e-12)
    # standard error of the Kish ratio (delta method on the first two weight moments)
    w = np.exp(-(e_target - e_source) / kT - np.max(-(e_target - e_source) / kT))
    m1, m2 = w.mean(), (w * w).mean()
    cov = np.cov(np.stack([w, w * w])) / w.size
    grad = np.array([2 * m1 / m2, -m1 * m1 / m2**2])
    se = math.sqrt(grad @ cov @ grad)
    assert abs(frac - exact) < 5 * se, (frac, exact, se)
    assert se < 0.01 * exact


def test_importance_ess_of_identical_distributions_is_one():
    e = np.random.default_rng(1).normal(size=100)
    assert st.importance_ess(e + 5.0, e, 500.0) == pytest.approx(1.0, rel=1e-14)


# ----------------------------------------------------------------------------------------
# the two-sampler comparison of slhmc validate


def test_batch_means_iat_of_an_ar1_series_and_the_comparison_statistics():
    """AR(1) x_t = phi x_{t-1} + e_t has tau = (1 + phi) / (1 - phi) (closed form); two independent AR(1)
    samples of one distribution pass the thinned KS test, a shifted one fails it; ESS is credited at most the draws."""
    rng = np.random.default_rng(0)

    def ar1(phi, shape, shift=0.0):
        e = rng.normal(size=shape) * np.sqrt(1 - phi**2)
        x = np.empty(shape)
        x[:, 0] = rng.normal(size=shape[0])
        for t in range(1, shape[1]):
            x[:, t] = phi * x[:, t - 1] + e[:, t]
        return x + shift

    phi = 0.8  # tau = 9
    series = ar1(phi, (16, 4000))
    tau = st.batch_means_iat(series)
    assert abs(tau / 9.0 - 1) < 0.2, tau
    # the standard error of the mean: sd sqrt(tau / N) with the closed-form tau (unit variance)
    assert abs(st.mean_standard_error(series) / np.sqrt(9.0 / series.size) - 1) < 0.15
    md, same, shifted = ar1(phi, (8, 2000)), ar1(0.0, (8, 300)), ar1(0.0, (8, 300), shift=0.3)
    c = st.compare_observable(md, same, md_calls=16000, slhmc_calls=2400, n_bootstrap=200)
    assert c.ks_pvalue > 0.01 and c.wasserstein[1] == 0.0
    assert abs(c.ratio - (c.ess_slhmc / 2400) / (c.ess_md / 16000)) < 1e-12 and c.ess_slhmc <= 2400
    assert 8 * 2000 / c.ess_md > 5 and c.n_ks_md < 16000 / 5  # the MD's correlated draws are thinned
    assert st.compare_observable(md, shifted, 16000, 2400, n_bootstrap=200).ks_pvalue < 1e-3
    assert st.capped_ess(1500.0, 1000) == 1000.0 and st.capped_ess(50.0, 1000) == 50.0
