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
from slhmc_jax.analysis import intervals as iv
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
    # a bootstrap replicate is the W1 of the draws weighted by how often they were taken:
    # F* - G* = (F - G) + deviations(w_x / n_x - 1 / n_x, w_y / n_y - 1 / n_y)
    process = iv.w1_exact_process(x, y)
    assert process.value == pytest.approx(w1, rel=1e-12)
    wx, wy = rng.integers(0, 4, size=(3, 300)).astype(float), rng.integers(0, 4, size=(3, 170)).astype(float)
    expected = [wasserstein_distance(x.ravel(), y.ravel(), np.repeat(a, 4), np.repeat(b, 3)) for a, b in zip(wx, wy)]

    def replicate(p):
        dx = wx / wx.sum(1, keepdims=True) - 1 / 300
        dy = wy / wy.sum(1, keepdims=True) - 1 / 170
        return np.abs(p.diff + p.deviations(dx, dy)) @ p.widths

    np.testing.assert_allclose(replicate(process), expected, rtol=1e-10)
    # many values: the quantile-grid replicates agree with the exact ones to the grid resolution
    grid = iv.w1_grid_process(x, y)
    assert abs(grid.value - w1) < 0.01 * w1
    np.testing.assert_allclose(replicate(grid), expected, rtol=0.02)
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


def _chains(tau, mu, rng, n_chains, n_draws):
    """n_chains AR(1) chains with marginal N(mu, 1) and integrated autocorrelation time tau."""
    return list(_ar1((tau - 1) / (tau + 1), n_chains, n_draws, rng) + mu)


def test_wasserstein_of_a_normal_shift_is_the_shift():
    """N(0, 1) against N(0.7, 1): W1 = 0.7 exactly (equal variances), resolved, two-sided."""
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal(20000), rng.standard_normal(20000) + 0.7
    r = st.wasserstein(x, y, iat=1.0, n_bootstrap=300)
    assert r.form == "two-sided" and r.low <= 0.7 <= r.high
    # the linear regime: half-width 1.96 sqrt(2 / n) of the difference of means
    assert (r.high - r.low) / (2 * 1.96 * math.sqrt(2 / 20000)) == pytest.approx(1.0, abs=0.15)
    same = st.wasserstein(x, x, n_bootstrap=100)
    assert same.form == "upper bound" and same.value == 0.0 and same.low == 0.0 and same.high > 0.0


def test_circular_block_weights_take_every_draw_once_on_average():
    rng = np.random.default_rng(8)
    w = iv.circular_block_weights([50, 37], 7, 4000, rng)
    np.testing.assert_array_equal(w[:, :50].sum(1), 50)
    np.testing.assert_array_equal(w[:, 50:].sum(1), 37)
    # E[w_f] = 1 for every draw (circular blocks have no edge deficit); w_f counts <= ceil(n / l) blocks
    se = w.std(0) / math.sqrt(w.shape[0])
    assert np.all(np.abs(w.mean(0) - 1) < 4.5 * se)


def _w1_coverage(tau, mu, repetitions, seed):
    rng = np.random.default_rng(seed)
    hits = 0
    for i in range(repetitions):
        x, y = _chains(tau, 0.0, rng, 3, 120), _chains(tau, mu, rng, 3, 120)
        _, lo, hi = st.wasserstein(x, y, n_bootstrap=200, seed=i)
        hits += lo <= mu <= hi
    return hits / repetitions


# expected coverage of a nominal 95% interval: 1 - 0.05 / 2 at W1 = 0 (only the lower end can miss),
# 0.95 at a resolved distance; bands of 3.5 binomial standard errors
def _band(p, n):
    return p - 3.5 * math.sqrt(p * (1 - p) / n), min(1.0, p + 3.5 * math.sqrt(p * (1 - p) / n))


@pytest.mark.parametrize("mu,expected", [(0.0, 0.975), (1.0, 0.95)])
def test_wasserstein_coverage_at_zero_and_positive_distance(mu, expected):
    """3 chains x 120 draws per side, tau = 4, 150 repetitions."""
    lo, hi = _band(expected, 150)
    assert lo <= _w1_coverage(4.0, mu, 150, seed=31) <= hi


@pytest.mark.slow
@pytest.mark.parametrize("tau", [1.0, 5.0, 20.0])
@pytest.mark.parametrize("mu,expected", [(0.0, 0.975), (1.0, 0.95)])
def test_wasserstein_coverage_slow(tau, mu, expected):
    lo, hi = _band(expected, 400)
    assert lo <= _w1_coverage(tau, mu, 400, seed=32) <= hi


def _paired_coverage(mu_c, mu_s, repetitions, seed, n_rep=2):
    """Coverage of delta = |mu_c| - |mu_s| (reference N(0, 1); W1 of a normal shift is the shift)."""
    rng = np.random.default_rng(seed)
    hits = 0
    for i in range(repetitions):
        cand = [_chains(3.0, mu_c, rng, 2, 100) for _ in range(n_rep)]
        slhmc = [_chains(3.0, mu_s, rng, 2, 100) for _ in range(n_rep)]
        d = st.paired_distance_difference(cand, slhmc, _chains(3.0, 0.0, rng, 2, 100), n_bootstrap=200, seed=i)
        hits += d.low <= abs(mu_c) - abs(mu_s) <= d.high
    return hits / repetitions


@pytest.mark.parametrize("mu_c,mu_s", [(0.0, 0.0), (0.8, 0.3)])
def test_paired_difference_coverage(mu_c, mu_s):
    """Equal arms (delta = 0) and two shifted arms (delta = 0.5): 100 repetitions, 2 replicates per arm."""
    lo, hi = _band(0.95, 100)
    assert lo <= _paired_coverage(mu_c, mu_s, 100, seed=41) <= hi


@pytest.mark.slow
@pytest.mark.parametrize("mu_c,mu_s", [(0.0, 0.0), (0.8, 0.3), (0.6, 0.0)])
def test_paired_difference_coverage_slow(mu_c, mu_s):
    lo, hi = _band(0.95, 300)
    assert lo <= _paired_coverage(mu_c, mu_s, 300, seed=42, n_rep=3) <= hi


def test_paired_difference_resolves_a_gap_and_pairing_narrows_it():
    """Candidate N(0.6, 1), slhmc N(0.4, 1), reference N(0, 1): delta = 0.2. Both W1 move with the
    reference's mean, so its noise cancels in the paired difference: with R replicates of N draws
    per arm and N reference draws, var(delta) is 2 / (R N) paired and 2 / (R N) + 2 / N unpaired
    (in units of tau / N), a width ratio of sqrt(1 + R) = 2 for R = 3."""
    rng = np.random.default_rng(12)
    cand = [_chains(2.0, 0.6, rng, 4, 300) for _ in range(3)]
    slhmc = [_chains(2.0, 0.4, rng, 4, 300) for _ in range(3)]
    ref = _chains(2.0, 0.0, rng, 4, 300)
    d = st.paired_distance_difference(cand, slhmc, ref, n_bootstrap=400, seed=1)
    assert (d.n_replicates_candidate, d.n_replicates_slhmc) == (3, 3)
    w1 = [np.mean([wasserstein_distance(np.concatenate(r), np.concatenate(ref)) for r in arm]) for arm in (cand, slhmc)]
    assert d.delta == pytest.approx(w1[0] - w1[1], rel=1e-12)
    assert d.resolved and d.low <= 0.2 <= d.high
    u = st._distance_difference(cand, slhmc, ref, iat=None, n_bootstrap=400, confidence=0.95, seed=1, paired=False)
    assert u.delta == d.delta
    assert 1.5 < (u.high - u.low) / (d.high - d.low) < 2.6
    # the same data with slhmc as the candidate: the difference changes sign, still resolved
    flipped = st.paired_distance_difference(slhmc, cand, ref, n_bootstrap=400, seed=1)
    assert flipped.delta == pytest.approx(-d.delta, rel=1e-12) and flipped.resolved and flipped.high < 0


def test_paired_difference_rejects_bad_input():
    ref = [np.zeros(10) + np.arange(10)]
    with pytest.raises(ValueError, match="candidate"):
        st.paired_distance_difference([], [ref], ref)
    with pytest.raises(ValueError, match="values per draw"):
        st.paired_distance_difference([[np.ones((10, 2))]], [ref], ref)


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
