"""slhmc-jax: self-learning hybrid Monte Carlo for fine-tuning MLIPs toward a target DFT.

The package reads as the method: physics at the top, then its four steps, the application on top.

- physics: ``units``, ``precision`` (float64 on), ``structures`` (System pytree, builders),
  ``neighbours/`` (exact multi-image neighbour lists), ``calculator`` (energy / forces / stress,
  ASE adapter), ``files`` (atomic writes), ``checks`` (settings validation), ``testing``;
- propose: ``models/`` (Potential protocol, registry, MACE, NequIP) and ``sampler/`` (``kernels``:
  HMC and cell moves, one Metropolis rule, delayed acceptance; ``integrators``; ``adaptation``;
  ``driver``: :func:`sample`; ``settings``; ``counters``; ``trajectory`` and ``result``: the one
  trajectory type; ``checkpoint``; ``md``: direct MD for validation);
- judge: ``targets/`` (``base``: the Target protocol and its Capabilities; ``stack``: ``as_target``
  and the wrappers; ``pyscf_target``, ``ase_target``, ``potential_target``; ``judge``: retries and
  failure policy; ``store``: the label store; ``dispatch``: executors);
- learn: ``finetune/`` (optax fine-tuning, one job per module);
- compare: ``analysis/`` (``observables``, ``statistics``, ``verdict``, ``diagnostics``, ``report``,
  ``run_directory``, ``figures``);
- application: ``app/`` (``config``, ``workflow``, ``validate``, ``cli``).

One SLHMC step: ``sampler.driver.Driver.step`` -> ``sampler.kernels`` ``propose`` ->
``targets.judge.Judge`` -> ``sampler.kernels`` ``accept`` -> ``sampler.result.production_record``.
"""

from slhmc_jax import precision  # noqa: F401  (enables float64 before any array is made)

__version__ = "0.1.0"

__all__ = ["__version__", "sample", "SampleResult", "SamplerSettings"]


def __getattr__(name):
    # The sampler pulls in the whole JAX core; DFT worker processes that only need
    # slhmc_jax.targets / store must not pay for it, so it is imported on first use.
    if name in ("sample", "SampleResult", "SamplerSettings"):
        from slhmc_jax import sampler

        return getattr(sampler, name)
    raise AttributeError(f"module 'slhmc_jax' has no attribute {name!r}")
