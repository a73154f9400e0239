"""Exactness of the SLHMC kernel with closed-form targets and a deliberately wrong proposal."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import slhmc_jax  # noqa: F401  (x64)
from slhmc_jax.sampler import kernels as hmc
from slhmc_jax.units import KB_EV_PER_K
from slhmc_jax.models.base import FunctionPotential
from slhmc_jax.analysis.diagnostics import mcmc_diagnostics

T = 300.0
KT = KB_EV_PER_K * T


def _run(potential, target_fn, x0, masses, n_chains, n_iter, n_traj, dt, seed=0, jitter=0.0):
    cells = jnp.broadcast_to(jnp.eye(3) * 20.0, (n_chains, 3, 3))
    z = jnp.ones(x0.shape[0], jnp.int32)
    xs = jnp.broadcast_to(x0, (n_chains,) + x0.shape[-2:])  # x0: one start, or one per chain
    states = hmc.init(xs, cells, jax.vmap(target_fn)(xs), seed)
    kernel = hmc.hmc_kernel(potential, z, masses, T, timestep_jitter=jitter)

    @jax.jit
    def step(states):
        prop = kernel.propose(states, None, dt, n_traj)
        e_t = jax.vmap(target_fn)(prop.positions)  # the "host query" of the target, here closed form
        return kernel.accept(states, prop, e_t)

    out = []
    for _ in range(n_iter):
        states, _ = step(states)
        out.append(np.asarray(states.positions))
    return np.stack(out, 1), np.asarray(states.n_accepted) / n_iter


def _harmonic(k):
    return lambda x, *a: 0.5 * k * jnp.sum(x**2)


def test_einstein_crystal_variance_is_target_not_proposal():
    k_target, k_prop = 2.0, 5.0  # eV/A^2
    n_atoms = 4
    x0 = jnp.zeros((n_atoms, 3))
    masses = jnp.full(n_atoms, 12.0)
    target = _harmonic(k_target)
    samples, acc = _run(FunctionPotential(_harmonic(k_prop)), target, x0, masses, 128, 300, 10, 1.0)
    var = samples[:, 50:].var()
    # proposal-only HMC (target = proposal) samples kT/k': measurably off
    samples_p, _ = _run(FunctionPotential(_harmonic(k_prop)), _harmonic(k_prop), x0, masses, 128, 300, 10, 1.0, seed=1)
    var_p = samples_p[:, 50:].var()
    exact, wrong = KT / k_target, KT / k_prop
    assert 0.2 < acc.mean() < 1.0
    assert abs(var / exact - 1) < 0.05, (var, exact)
    assert abs(var_p / wrong - 1) < 0.05 and abs(var_p / exact - 1) > 0.3


def test_timestep_jitter_breaks_a_full_period_resonance_and_stays_exact():
    """Proposal = target = a spring of k = 2 eV/A^2, m = 12 amu, L = 20 steps of dt = 2 sin(pi / L) / omega:
    the velocity-Verlet map of a harmonic oscillator is a rotation by phi, cos phi = 1 - (omega dt)^2 / 2,
    so L phi = 2 pi returns every trajectory to its start and a chain without jitter never moves. With
    dt (1 + 0.5 u) the chains started in the target sample N(0, kT/k) (KS, variance within its error bar)."""
    from slhmc_jax.units import FS

    k, n_traj = 2.0, 20
    masses = jnp.full(1, 12.0)
    dt_fs = 2.0 * np.sin(np.pi / n_traj) / np.sqrt(k / 12.0) / FS
    sigma2 = KT / k
    x0 = jax.random.normal(jax.random.PRNGKey(7), (1024, 1, 3)) * np.sqrt(sigma2)
    stuck, _ = _run(FunctionPotential(_harmonic(k)), _harmonic(k), x0, masses, 1024, 5, n_traj, dt_fs)
    np.testing.assert_allclose(stuck[:, -1], np.asarray(x0), atol=1e-9)  # the resonance: x' = x every step
    samples, acc = _run(FunctionPotential(_harmonic(k)), _harmonic(k), x0, masses, 1024, 60, n_traj, dt_fs, jitter=0.5)
    assert acc.mean() > 0.95
    x = samples[:, 9::10, 0, 0]  # (1024, 6), every 10th step
    ess = mcmc_diagnostics(x, np.ones(x.shape, bool)).observables["value"].ess
    assert ess > 2000, ess  # the jittered chains move: thousands of effectively independent draws
    assert stats.kstest(x.ravel(), stats.norm(0, np.sqrt(sigma2)).cdf).pvalue > 0.01
    x2 = (samples**2).mean(axis=(2, 3))
    ess_x2 = mcmc_diagnostics(x2, np.ones(x2.shape, bool)).observables["value"].ess * 3
    assert abs(x2.mean() - sigma2) < 4 * sigma2 * np.sqrt(2 / ess_x2), (x2.mean(), sigma2, ess_x2)


def _morse(D, a, r0):
    def energy(x, *args):
        r = jnp.linalg.norm(x[1] - x[0])
        return D * (1 - jnp.exp(-a * (r - r0))) ** 2
    return energy


def _morse_cdf(D, a, r0):
    r = np.linspace(0.3, 4.0, 20001)
    w = r**2 * np.exp(-D * (1 - np.exp(-a * (r - r0))) ** 2 / KT)
    c = np.cumsum(w)
    return lambda q: np.interp(q, r, c / c[-1])


def test_morse_dimer_bond_length_distribution_ks():
    target_params, prop_params = (0.5, 1.5, 1.2), (0.8, 1.2, 1.3)
    x0 = jnp.array([[0.0, 0.0, 0.0], [1.2, 0.0, 0.0]])
    masses = jnp.array([1.0, 1.0])
    samples, acc = _run(FunctionPotential(_morse(*prop_params)), _morse(*target_params), x0, masses, 256, 120, 8, 1.0)
    r = np.linalg.norm(samples[:, 20::10, 1] - samples[:, 20::10, 0], axis=-1).ravel()  # thinned, ~2500 samples
    p_ok = stats.kstest(r, _morse_cdf(*target_params)).pvalue
    samples_p, _ = _run(FunctionPotential(_morse(*prop_params)), _morse(*prop_params), x0, masses, 256, 120, 8, 1.0, seed=3)
    r_p = np.linalg.norm(samples_p[:, 20::10, 1] - samples_p[:, 20::10, 0], axis=-1).ravel()
    p_wrong = stats.kstest(r_p, _morse_cdf(*target_params)).pvalue
    assert acc.mean() > 0.2
    # the KS test needs (nearly) independent draws: thousands of them, by ArviZ's ESS
    r_chains = np.linalg.norm(samples[:, 20::10, 1] - samples[:, 20::10, 0], axis=-1)
    assert mcmc_diagnostics(r_chains, np.ones(r_chains.shape, bool)).observables["value"].ess > 2000
    assert p_ok > 0.01, p_ok
    assert p_wrong < 1e-6, p_wrong


# ---- delayed acceptance (Christen & Fox 2005): a wrong screen, a wrong proposal, the exact target


def _run_screened(potential, target_fn, screen_fn, x0, masses, n_chains, n_iter, n_traj, dt, seed=0):
    """Like _run, with stage one on ``screen_fn``; the target is evaluated only where stage one passed."""
    cells = jnp.broadcast_to(jnp.eye(3) * 20.0, (n_chains, 3, 3))
    z = jnp.ones(x0.shape[0], jnp.int32)
    xs = jnp.broadcast_to(x0, (n_chains,) + x0.shape[-2:])  # x0: one start, or one per chain
    states = hmc.init(xs, cells, jax.vmap(target_fn)(xs), seed, jax.vmap(screen_fn)(xs))
    kernel = hmc.hmc_kernel(potential, z, masses, T)

    @jax.jit
    def step(states):
        prop = kernel.propose(states, None, dt, n_traj)
        screening = kernel.screen(states, prop, jax.vmap(screen_fn)(prop.positions))
        e_t = jnp.where(screening.passed, jax.vmap(target_fn)(prop.positions), jnp.inf)  # no call where rejected
        states, info = kernel.accept(states, prop, e_t, screening)
        return states, (screening.passed, info.accepted)

    out, passed, accepted = [], 0, 0
    for _ in range(n_iter):
        states, (p, a) = step(states)
        out.append(np.asarray(states.positions))
        passed, accepted = passed + np.asarray(p), accepted + np.asarray(a)
        assert not np.any(np.asarray(a) & ~np.asarray(p))  # stage two only sees what passed stage one
    return np.stack(out, 1), passed / n_iter, accepted / n_iter, states


@pytest.mark.parametrize("screen", ["stiff", "shifted"])
def test_delayed_acceptance_with_a_wrong_screen_samples_the_target_exactly(screen):
    """Target k = 2 eV/A^2, proposal k = 2.5, screen 3x too stiff (k = 6) or with its minimum shifted by
    ~1 thermal width: the coordinate marginal is N(0, kT/k_target) (KS, variance within its error bar)."""
    k_target, k_prop = 2.0, 2.5
    n_atoms = 1
    sigma2 = KT / k_target
    # start in the target distribution (no burn-in question): stationarity is what is tested
    x0 = jax.random.normal(jax.random.PRNGKey(5), (2048, n_atoms, 3)) * np.sqrt(sigma2)
    masses = jnp.full(n_atoms, 12.0)
    screen_fn = _harmonic(6.0) if screen == "stiff" else (lambda x, *a: 0.5 * k_target * jnp.sum((x - 0.1) ** 2))
    samples, passed, acc, states = _run_screened(FunctionPotential(_harmonic(k_prop)), _harmonic(k_target), screen_fn,
                                                 x0, masses, 2048, 150, 35, 1.0, seed=3)
    assert 0.1 < passed.mean() < 0.9 and 0.1 < acc.mean() < passed.mean()  # both stages reject something
    # the cached screen energies are those of the current states
    np.testing.assert_allclose(np.asarray(states.screen_energy), np.asarray(jax.vmap(screen_fn)(states.positions)),
                               rtol=1e-12, atol=1e-12)
    # 35 fs is a quarter period of the proposal's spring (omega = 0.045 rad/fs): x' ~ p, nearly independent
    x = samples[:, 29::30, 0, 0]  # one coordinate, every 30th step: (2048, 5), the chains independent
    ess = mcmc_diagnostics(x, np.ones(x.shape, bool)).observables["value"].ess
    assert ess > 2000, ess
    assert stats.kstest(x.ravel(), stats.norm(0, np.sqrt(sigma2)).cdf).pvalue > 0.01
    # variance of all coordinates against its error bar: se(<x^2>) = sigma^2 sqrt(2 / ESS)
    x2 = (samples ** 2).mean(axis=(2, 3))
    ess_x2 = mcmc_diagnostics(x2, np.ones(x2.shape, bool)).observables["value"].ess * n_atoms * 3
    var = float(x2.mean())
    assert abs(var - sigma2) < 4 * sigma2 * np.sqrt(2 / ess_x2), (var, sigma2, ess_x2)
    # not vacuous: stage one alone would sample the screen, measurably off
    wrong_var = KT / 6.0 if screen == "stiff" else sigma2 + 0.1**2
    assert abs(var - wrong_var) > 0.2 * sigma2


def test_delayed_acceptance_without_a_screen_change_is_the_one_stage_chain():
    """A screen equal to the target: stage two always accepts what stage one passed (a2 = 1 up to
    rounding), and the chain is the one-stage chain's in law; here its key stream: same momenta."""
    x0 = jnp.zeros((2, 3))
    masses = jnp.full(2, 12.0)
    target = _harmonic(2.0)
    _, passed, acc, _ = _run_screened(FunctionPotential(_harmonic(5.0)), target, target, x0, masses, 64, 40, 10, 1.0)
    np.testing.assert_allclose(passed, acc)
