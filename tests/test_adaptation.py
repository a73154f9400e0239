"""Warm-up tuning (slhmc_jax.sampler.adaptation) against a closed-form acceptance model."""

import math

import numpy as np

from slhmc_jax.sampler.adaptation import timestep_and_length


def _acceptances(dt_fs, n_steps, dt0=2.0, tau0=40.0):
    """a_ML(dt) = exp(-(dt/dt0)^2) (integration error grows with dt), a(tau) = a_ML exp(-tau/tau0)."""
    a_ml = math.exp(-((dt_fs / dt0) ** 2))
    return a_ml * math.exp(-dt_fs * n_steps / tau0), a_ml


def test_tuning_converges_to_the_closed_form_targets():
    target, max_steps = 0.6, 200
    tune = timestep_and_length(target, max_steps, max_timestep_fs=20.0)
    state = tune.init(1.0, 10)
    for _ in range(2000):
        a, a_ml = _acceptances(*tune.parameters(state))
        state = tune.update(state, a, a_ml)
    dt, n = tune.final(state)
    # a_ML* = (1 + a*) / 2 fixes dt; then a* fixes tau = L dt
    dt_exact = 2.0 * math.sqrt(-math.log(0.5 * (1 + target)))
    tau_exact = -40.0 * math.log(target / (0.5 * (1 + target)))
    assert abs(dt / dt_exact - 1) < 0.03, (dt, dt_exact)
    assert abs(n * dt / tau_exact - 1) < 0.05, (n * dt, tau_exact)
    assert len(state.history) == 2000 and state.history[0].timestep_fs == 1.0 and state.history[0].trajectory_steps == 10


def test_length_pinned_at_its_bound_hands_the_acceptance_to_dt():
    """An acceptance that L cannot change (only dt lowers it) and an accurate ML integration: dt grows,
    L ends pinned at a bound of its range, and there dt brings the acceptance to the target."""
    tune = timestep_and_length(0.6, 8, max_timestep_fs=50.0)
    state = tune.init(1.0, 8)
    for _ in range(3000):
        dt, n = tune.parameters(state)
        a = math.exp(-((dt / 10.0) ** 2))  # independent of L: only dt can lower it
        state = tune.update(state, a, 0.99)  # the ML dynamics alone integrates well
    dt, n = tune.final(state)
    assert n in (1, 8)
    assert abs(math.exp(-((dt / 10.0) ** 2)) - 0.6) < 0.01


def test_state_is_plain_data_and_final_without_updates_keeps_the_start():
    import pickle

    tune = timestep_and_length(0.65, 40, max_timestep_fs=10.0)
    state = tune.init(0.5, 10)
    assert tune.final(state) == (0.5, 10)
    state = tune.update(state, 0.3, 0.9)
    assert pickle.loads(pickle.dumps(state)) == state
    assert np.isfinite(state.log_dt) and state.log_tau >= state.log_dt
