"""NPT cell moves: ideal-gas volume distribution p(V) ∝ V^N exp(-beta P V) (Gamma(N+1, kT/P)) and
orthorhombic cell-length marginals against numerical integrals."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

import slhmc_jax  # noqa: F401
from slhmc_jax.sampler import kernels as hmc
from slhmc_jax.units import EV_PER_A3_IN_GPA, KB_EV_PER_K

T, P_GPA, N = 300.0, 0.5, 4


def _volumes(use_jacobian, seed=0, n_chains=512, n_iter=300):
    kT, p = KB_EV_PER_K * T, P_GPA / EV_PER_A3_IN_GPA
    v_mean = (N + 1) * kT / p
    cell = jnp.eye(3) * v_mean ** (1 / 3)
    x = jax.random.uniform(jax.random.PRNGKey(9), (N, 3)) @ cell
    states = hmc.init(jnp.broadcast_to(x, (n_chains, N, 3)), jnp.broadcast_to(cell, (n_chains, 3, 3)),
                      jnp.zeros(n_chains), seed)
    kernel = hmc.cell_kernel(T, P_GPA, 0.5, "isotropic")

    @jax.jit
    def step(states):
        prop = kernel.propose(states)
        if not use_jacobian:
            prop = prop._replace(log_jacobian=jnp.zeros_like(prop.log_jacobian))
        return kernel.accept(states, prop, jnp.zeros(n_chains))[0]

    vs = []
    for i in range(n_iter):
        states = step(states)
        if i >= 100 and i % 20 == 0:
            vs.append(np.abs(np.linalg.det(np.asarray(states.cell))))
    return np.concatenate(vs), kT / p


def test_ideal_gas_volume_distribution():
    v, scale = _volumes(True)
    assert stats.kstest(v, stats.gamma(N + 1, scale=scale).cdf).pvalue > 0.01
    v_bad, _ = _volumes(False, seed=1)  # without the Jacobian the walk samples the wrong measure
    assert stats.kstest(v_bad, stats.gamma(N + 1, scale=scale).cdf).pvalue < 1e-6


def test_sample_npt_ideal_gas_through_sample():
    import ase

    from slhmc_jax.models.base import FunctionPotential

    kT, p = KB_EV_PER_K * T, P_GPA / EV_PER_A3_IN_GPA
    L = ((N + 1) * kT / p) ** (1 / 3)
    atoms = ase.Atoms("Ar" * N, scaled_positions=np.random.default_rng(0).random((N, 3)), cell=np.eye(3) * L, pbc=True)
    res = slhmc_jax.sample(atoms, FunctionPotential(lambda x, c, z: 0.0 * jnp.sum(x)), lambda al: np.zeros(len(al)),
                           temperature_K=T, n_chains=256, n_steps=160, trajectory_steps=1, timestep_fs=1.0, seed=0,
                           ensemble="npt", pressure_GPa=P_GPA, max_log_cell_step=0.8, progress=False)
    v = np.abs(np.linalg.det(res.cells[:, 40::20])).ravel()
    assert stats.kstest(v, stats.gamma(N + 1, scale=kT / p).cdf).pvalue > 0.01


# ---- orthorhombic (anisotropic) cell moves: a, b, c fluctuate independently
#
# Target: N ideal-gas atoms in an orthorhombic cell diag(a, b, c) held by a closed-form cell energy
# U(h) = sum_l kappa/2 (l - l0)^2 (an ideal gas alone leaves the cell shape unbounded). The NPT density
# in (a, b, c) is (abc)^N exp(-beta [U + P abc]); the marginal of a is
#   p(a) ∝ a^N exp(-beta kappa/2 (a - l0)^2) ∫∫ (bc)^N exp(-beta [kappa/2 ((b-l0)^2 + (c-l0)^2) + P a b c]) db dc,
# integrated numerically on a grid (independent of the code under test).

KAPPA, L0 = 0.6, 3.4  # eV/A^2, A


def _cell_energy(lengths):
    return 0.5 * KAPPA * np.sum((np.asarray(lengths) - L0) ** 2, axis=-1)


def _length_marginal_cdf():
    kT, p = KB_EV_PER_K * T, P_GPA / EV_PER_A3_IN_GPA
    grid = np.linspace(1.5, 6.0, 450)
    log_f = N * np.log(grid) - 0.5 * KAPPA * (grid - L0) ** 2 / kT
    f = np.exp(log_f - log_f.max())
    bc = grid[:, None] * grid[None, :]
    ff = f[:, None] * f[None, :]
    dens = f * np.array([np.sum(ff * np.exp(-p * a * bc / kT)) for a in grid])
    cdf = np.cumsum(dens)
    return lambda q: np.interp(q, grid, cdf / cdf[-1])


def _ortho_lengths(use_jacobian, seed=0, n_chains=512, n_iter=400):
    cell = jnp.eye(3) * L0
    x = jax.random.uniform(jax.random.PRNGKey(5), (N, 3)) @ cell
    energy = jax.vmap(lambda c: 0.5 * KAPPA * jnp.sum((jnp.linalg.norm(c, axis=1) - L0) ** 2))
    cells = jnp.broadcast_to(cell, (n_chains, 3, 3))
    states = hmc.init(jnp.broadcast_to(x, (n_chains, N, 3)), cells, energy(cells), seed)
    kernel = hmc.cell_kernel(T, P_GPA, 0.15, "orthorhombic")

    @jax.jit
    def step(states):
        prop = kernel.propose(states)
        if not use_jacobian:
            prop = prop._replace(log_jacobian=jnp.zeros_like(prop.log_jacobian))
        return kernel.accept(states, prop, energy(prop.cell))[0]

    out = []
    for i in range(n_iter):
        states = step(states)
        if i >= 100 and i % 20 == 0:
            out.append(np.linalg.norm(np.asarray(states.cell), axis=-1))
    return np.concatenate(out)  # (n_samples, 3): a, b, c


def test_orthorhombic_cell_lengths_follow_the_npt_marginal():
    cdf = _length_marginal_cdf()
    abc = _ortho_lengths(True)
    for k in range(3):
        assert stats.kstest(abc[:, k], cdf).pvalue > 0.01, k
    # the three lengths move independently (an isotropic move would make them perfectly correlated)
    assert abs(np.corrcoef(abc[:, 0], abc[:, 2])[0, 1]) < 0.5
    bad = _ortho_lengths(False, seed=1)  # without (V'/V)^(N+1) the walk samples the wrong measure
    assert stats.kstest(bad[:, 0], cdf).pvalue < 1e-6


def test_sample_npt_orthorhombic_through_sample():
    import ase

    from slhmc_jax.models.base import FunctionPotential

    atoms = ase.Atoms("Ar" * N, scaled_positions=np.random.default_rng(1).random((N, 3)), cell=np.eye(3) * L0, pbc=True)
    target = lambda al: [float(_cell_energy(a.cell.lengths())) for a in al]  # noqa: E731
    res = slhmc_jax.sample(atoms, FunctionPotential(lambda x, c, z: 0.0 * jnp.sum(x)), target,
                           temperature_K=T, n_chains=256, n_steps=180, trajectory_steps=1, timestep_fs=1.0, seed=2,
                           ensemble="npt_orthorhombic", pressure_GPa=P_GPA, max_log_cell_step=0.15, progress=False)
    # every 20th cell move (the IAT of a is ~11 cell moves) after 39 cell moves of burn-in (9 unrecorded)
    lengths = np.linalg.norm(res.cells[:, 60::40], axis=-1).reshape(-1, 3)
    cdf = _length_marginal_cdf()
    for k in (0, 2):
        assert stats.kstest(lengths[:, k], cdf).pvalue > 0.01, k
    assert np.all(np.abs(res.cells[:, :, 0, 1:]) < 1e-12)  # stays orthorhombic
    # the cell lengths have their own convergence diagnostics, and the rates are reported per move kind
    obs = res.diagnostics.mcmc.observables
    assert {"volume_A3", "a_A", "b_A", "c_A"} <= set(obs) and all(obs[k].ess > 100 for k in ("a_A", "b_A", "c_A"))
    assert res.cell_acceptance_rate.shape == (256,) and 0 < res.cell_acceptance_rate.mean() < 1
    np.testing.assert_allclose(res.acceptance_rate, 0.5 * (res.hmc_acceptance_rate + res.cell_acceptance_rate))
