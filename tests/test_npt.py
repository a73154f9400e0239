"""NPT cell moves: ideal gas volume distribution p(V) ∝ V^N exp(-beta P V) (Gamma(N+1, kT/P))."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

import slhmc_jax  # noqa: F401
from slhmc_jax import hmc
from slhmc_jax.integrators import KB_EV_PER_K

T, P_GPA, N = 300.0, 0.5, 4


def _volumes(use_jacobian, seed=0, n_chains=512, n_iter=300):
    kT, p = KB_EV_PER_K * T, P_GPA / hmc.EV_PER_A3_IN_GPA
    v_mean = (N + 1) * kT / p
    cell = jnp.eye(3) * v_mean ** (1 / 3)
    x = jax.random.uniform(jax.random.PRNGKey(9), (N, 3)) @ cell
    keys = jax.random.split(jax.random.PRNGKey(seed), n_chains)
    states = jax.vmap(lambda k: hmc.init(x, cell, 0.0, k))(keys)

    @jax.jit
    def step(states):
        def one(s):
            key, k1, k2 = jax.random.split(s.key, 3)
            s = s._replace(key=key)
            xn, cn, lj = hmc.propose_cell(s, k1, 0.5, "isotropic")
            return hmc.accept_cell(s, xn, cn, lj if use_jacobian else 0.0, 0.0, T, P_GPA, k2)[0]
        return jax.vmap(one)(states)

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

    kT, p = KB_EV_PER_K * T, P_GPA / hmc.EV_PER_A3_IN_GPA
    L = ((N + 1) * kT / p) ** (1 / 3)
    atoms = ase.Atoms("Ar" * N, scaled_positions=np.random.default_rng(0).random((N, 3)), cell=np.eye(3) * L, pbc=True)
    res = slhmc_jax.sample(atoms, FunctionPotential(lambda x, c, z: 0.0 * jnp.sum(x)), lambda al: np.zeros(len(al)),
                           temperature_K=T, n_chains=256, n_steps=160, trajectory_steps=1, timestep_fs=1.0, seed=0,
                           ensemble="npt", pressure_GPa=P_GPA, max_log_cell_step=0.8, progress=False)
    v = np.abs(np.linalg.det(res.cells[:, 40::20])).ravel()
    assert stats.kstest(v, stats.gamma(N + 1, scale=kT / p).cdf).pvalue > 0.01
