"""Warm-up tuning of the SLHMC timestep dt and trajectory length L, as (init, update, final).

Robbins-Monro on logs, gain g_t = 1.5 t^-0.5 at the t-th HMC warm-up step, pooled over chains:

    ln dt  += g_t (a_ML - a_ML*),   a_ML = <min(1, exp(-beta dH_ML))>, a_ML* = (1 + a*) / 2
    ln tau += g_t (a - a*),          a = <min(1, exp(-beta dH))>,       a* = target acceptance

dH_ML is the energy error of the ML trajectory itself (integration error: dt controls it) and dH
the full SLHMC error (ML-vs-target mismatch, which grows with tau = L dt). L = round(tau / dt),
clipped to [1, max_trajectory_steps]; tau is kept within [dt, max_trajectory_steps * dt] and dt
below ``max_timestep_fs``. While tau / dt sits at a bound of that range (the mismatch cannot be
traded against the trajectory length any more, e.g. a proposal so good that acceptance stays high
for the longest trajectory), dt follows a instead:

    ln dt += g_t (a - a*).

``final`` fixes the production values from the second half of the warm-up: dt = exp(mean ln dt),
L = round(exp(mean ln tau) / dt). Host-side and pure: the state is a picklable NamedTuple, so a
checkpoint holds it and a resumed warm-up continues exactly.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np


class WarmupStep(NamedTuple):
    """One tuning step: the dt (fs) and L used, and the pooled acceptance a and ML acceptance a_ML."""

    timestep_fs: float
    trajectory_steps: int
    acceptance: float
    ml_acceptance: float


class AdaptationState(NamedTuple):
    """ln dt (dt in fs), ln tau (tau = L dt in fs), and the history of the tuning steps."""

    log_dt: float
    log_tau: float
    history: tuple[WarmupStep, ...] = ()
    log_history: tuple[tuple[float, float], ...] = ()


class Adaptation(NamedTuple):
    """``init(dt_fs, L) -> state``; ``parameters(state) -> (dt_fs, L)`` to use now;
    ``update(state, a, a_ML) -> state``; ``final(state) -> (dt_fs, L)`` for production."""

    init: Callable[[float, int], AdaptationState]
    parameters: Callable[[AdaptationState], tuple[float, int]]
    update: Callable[[AdaptationState, float, float], AdaptationState]
    final: Callable[[AdaptationState], tuple[float, int]]


def timestep_and_length(target_acceptance: float, max_trajectory_steps: int, max_timestep_fs: float) -> Adaptation:
    """The dt / L tuning above for a target acceptance in (0, 1), L <= max_trajectory_steps and
    dt <= max_timestep_fs (fs)."""
    max_traj = int(max_trajectory_steps)

    def length(log_tau: float, dt: float) -> int:
        return int(min(max(round(math.exp(log_tau) / dt), 1), max_traj))

    def init(timestep_fs: float, trajectory_steps: int) -> AdaptationState:
        return AdaptationState(math.log(timestep_fs), math.log(timestep_fs * trajectory_steps))

    def parameters(state: AdaptationState) -> tuple[float, int]:
        dt = math.exp(state.log_dt)
        return dt, length(state.log_tau, dt)

    def update(state: AdaptationState, acceptance: float, ml_acceptance: float) -> AdaptationState:
        dt, n_traj = parameters(state)
        gain = 1.5 * (len(state.history) + 1) ** -0.5
        raw_length = math.exp(state.log_tau) / dt
        if 1.0 < raw_length < max_traj:
            signal = ml_acceptance - 0.5 * (1.0 + target_acceptance)  # dt controls the integration error
        else:
            signal = acceptance - target_acceptance  # tau is pinned at a bound of L: dt takes over
        log_dt = min(state.log_dt + gain * signal, math.log(max_timestep_fs))
        log_tau = state.log_tau + gain * (acceptance - target_acceptance)
        log_tau = min(max(log_tau, log_dt), log_dt + math.log(max_traj))  # 1 <= L <= max at the new dt
        return AdaptationState(log_dt, log_tau, state.history + (WarmupStep(dt, n_traj, acceptance, ml_acceptance),),
                               state.log_history + ((log_dt, log_tau),))

    def final(state: AdaptationState) -> tuple[float, int]:
        if not state.log_history:
            return parameters(state)
        tail = np.asarray(state.log_history[len(state.log_history) // 2:])
        dt = float(np.exp(tail[:, 0].mean()))
        return dt, length(float(tail[:, 1].mean()), dt)

    return Adaptation(init, parameters, update, final)
