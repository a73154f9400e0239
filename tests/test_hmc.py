"""Exactness of the SLHMC kernel with closed-form targets and a deliberately wrong proposal."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import slhmc_jax  # noqa: F401  (x64)
from slhmc_jax import hmc
from slhmc_jax.integrators import KB_EV_PER_K
from slhmc_jax.models.base import FunctionPotential
from slhmc_jax.diagnostics import mcmc_diagnostics

T = 300.0
KT = KB_EV_PER_K * T


def _run(potential, target_fn, x0, masses, n_chains, n_iter, n_traj, dt, seed=0):
    cells = jnp.broadcast_to(jnp.eye(3) * 20.0, (n_chains, 3, 3))
    z = jnp.ones(x0.shape[0], jnp.int32)
    xs = jnp.broadcast_to(x0, (n_chains,) + x0.shape)
    states = hmc.init(xs, cells, jax.vmap(target_fn)(xs), seed)
    kernel = hmc.hmc_kernel(potential, z, masses, T)

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
