"""slhmc_jax.analysis.diagnostics against closed forms: AR(1) ESS / IAT, R-hat of well-mixed SLHMC chains, error quantiles."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

import slhmc_jax  # noqa: F401  (x64)
from slhmc_jax.sampler import kernels as hmc
from slhmc_jax.units import KB_EV_PER_K
from slhmc_jax.models.base import FunctionPotential
from slhmc_jax.analysis.diagnostics import energy_error_distribution, mcmc_diagnostics


def _ar1(phi, n_chains, n_draws, seed):
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((n_chains, n_draws))
    x = np.empty_like(eps)
    x[:, 0] = eps[:, 0]
    s = np.sqrt(1 - phi**2)
    for t in range(1, n_draws):
        x[:, t] = phi * x[:, t - 1] + s * eps[:, t]
    return x


def test_ess_and_iat_match_ar1_closed_form():
    phi, n_chains, n_draws = 0.8, 4, 20000
    x = _ar1(phi, n_chains, n_draws, 0)
    iat_exact = (1 + phi) / (1 - phi)  # sum over all lags of phi^|k|
    d = mcmc_diagnostics(x, np.ones_like(x, bool), n_judged=x.size).observables["value"]
    assert abs(d.ess / (x.size / iat_exact) - 1) < 0.2, d.ess
    assert abs(d.iat / iat_exact - 1) < 0.2
    np.testing.assert_allclose(d.iat_per_chain, iat_exact, rtol=0.2)
    assert abs(d.ess_per_target_call - 1 / iat_exact) < 0.2 / iat_exact
    assert d.rhat < 1.01
    # chains that sample different means are flagged
    shifted = x + np.array([0.0, 0.0, 1.0, 1.0])[:, None]
    assert mcmc_diagnostics(shifted, np.ones_like(x, bool)).observables["value"].rhat > 1.1


def test_rhat_near_one_for_well_mixed_slhmc_chains():
    T, k_target, k_prop = 300.0, 2.0, 3.0
    target = lambda x: 0.5 * k_target * jnp.sum(x**2)  # noqa: E731
    proposal = FunctionPotential(lambda x, c, z: 0.5 * k_prop * jnp.sum(x**2))
    n_chains, n_atoms = 16, 3
    masses = jnp.full(n_atoms, 12.0)
    z = jnp.ones(n_atoms, jnp.int32)
    cells = jnp.broadcast_to(jnp.eye(3) * 20.0, (n_chains, 3, 3))
    # over-dispersed starts, as R-hat expects
    x0 = jax.random.normal(jax.random.PRNGKey(1), (n_chains, n_atoms, 3)) * 0.15  # equilibrium spread is 0.11 A
    states = hmc.init(x0, cells, jax.vmap(target)(x0), 0)
    kernel = hmc.hmc_kernel(proposal, z, masses, T)

    @jax.jit
    def step(states):
        prop = kernel.propose(states, None, 2.0, 10)
        return kernel.accept(states, prop, jax.vmap(target)(prop.positions))

    energies, accepted, errors = [], [], []
    for _ in range(600):
        states, info = step(states)
        energies.append(np.asarray(states.target_energy))
        accepted.append(np.asarray(info.accepted))
    e = np.stack(energies, 1)[:, 100:]
    d = mcmc_diagnostics({"energy": e}, np.stack(accepted, 1)[:, 100:], n_judged=e.size)
    assert d.observables["energy"].rhat < 1.05, d.observables["energy"].rhat
    assert 0.2 < d.acceptance < 1 and d.acceptance_per_chain.shape == (n_chains,)
    # closed form check that the chains are right: <E> = 3 N kT / 2
    assert abs(e.mean() / (1.5 * n_atoms * KB_EV_PER_K * T) - 1) < 0.1
    assert d.observables["energy"].ess > 500


def test_energy_error_distribution_quantiles():
    rng = np.random.default_rng(3)
    err = rng.normal(0.01, 0.02, (64, 500))
    err[0, 0] = np.nan
    d = energy_error_distribution(err)
    assert d.n == err.size and d.n_non_finite == 1
    for q, v in d.quantiles.items():
        assert abs(v - stats.norm(0.01, 0.02).ppf(q)) < 0.002, q
    counts, edges = d.histogram_counts, d.histogram_edges
    assert counts.sum() == err.size - 1 and len(edges) == len(counts) + 1
    diag = mcmc_diagnostics(rng.normal(size=(4, 100)), np.ones((4, 100), bool), ml_energy_error=err)
    assert diag.ml_energy_error.n == err.size
