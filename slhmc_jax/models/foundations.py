"""Foundation models by name or path: MACE-MP through mace-torch's own download and cache, models
shipped with this package, files, and registry models with hyperparameters.

    load_foundation("mace-mp-0-small")          # mace-torch downloads (or finds in its cache) the checkpoint
    load_foundation("package:quickstart_tio2_lda")
    load_foundation("finetuned.npz") / ("mace.model")
    load_foundation("registry:mace", hyperparameters={...}, seed=0)
"""

from __future__ import annotations

import os
from pathlib import Path

import jax.numpy as jnp

# our names -> mace-torch's keys of ``mace.calculators.foundations_models.mace_mp_urls``
MACE_MP_NAMES = {
    "mace-mp-0-small": "small",
    "mace-mp-0-medium": "medium",
    "mace-mp-0-large": "large",
    "mace-mp-0b3-medium": "medium-0b3",
    "mace-mpa-0-medium": "medium-mpa-0",
    "mace-omat-0-small": "small-omat-0",
    "mace-omat-0-medium": "medium-omat-0",
    "mace-matpes-pbe-0": "mace-matpes-pbe-0",
    "mace-matpes-r2scan-0": "mace-matpes-r2scan-0",
}
PACKAGE_DATA = Path(__file__).resolve().parent.parent / "data"


def mace_mp_checkpoint(name: str) -> str:
    """The local path of a MACE-MP checkpoint: mace-torch's cache, downloaded there if missing.

    Raises:
        ValueError: unknown name. RuntimeError: offline (names the file to fetch and where to put it).
    """
    if name not in MACE_MP_NAMES:
        raise ValueError(f"unknown MACE-MP model {name!r}; known: {sorted(MACE_MP_NAMES)}")
    try:
        import mace  # noqa: F401  (before e3nn; see DESIGN.md)
        from mace.calculators import foundations_models as fm
    except ImportError as err:
        raise RuntimeError(f"loading {name!r} needs mace-torch: pip install '.[torch]' ({err})") from None
    key = MACE_MP_NAMES[name]
    url = fm.mace_mp_urls[key]
    cached = fm.get_cache_dir() / "".join(c for c in os.path.basename(url) if c.isalnum() or c in "_")
    try:
        return fm.download_mace_mp_checkpoint(key)
    except Exception as err:  # urllib / socket errors: no internet here
        raise RuntimeError(
            f"could not download {name!r} ({type(err).__name__}: {err}). Fetch {url} on a machine with "
            f"internet and copy it to {cached} (mace-torch's cache), or give the file's path as "
            f"[model] foundation.") from None


def load_foundation(spec: str, *, dtype: str = "float64", hyperparameters: dict | None = None, seed: int = 0,
                    atomic_numbers=None):
    """A Potential from a name or path (see the module docstring).

    Args:
        spec: "package:NAME", a MACE-MP name, a model file, or "registry:NAME".
        dtype: "float64" or "float32" parameters.
        hyperparameters, seed: for "registry:NAME" (random weights from ``seed``).
        atomic_numbers: species table of a registry model (default: the hyperparameters').
    """
    from slhmc_jax.models import mace
    from slhmc_jax.models import registry

    jdtype = jnp.float64 if dtype == "float64" else jnp.float32
    if spec.startswith("registry:"):
        import jax

        hps = dict(hyperparameters or {})
        z = hps.pop("atomic_numbers", atomic_numbers)
        if z is None:
            raise ValueError(f"{spec}: give atomic_numbers in [model] hyperparameters")
        return registry.build(spec.split(":", 1)[1], tuple(z), key=jax.random.PRNGKey(seed), dtype=jdtype, **hps)
    if spec.startswith("package:"):
        path = PACKAGE_DATA / f"{spec.split(':', 1)[1]}.npz"
        if not path.exists():
            shipped = sorted(p.stem for p in PACKAGE_DATA.glob("*.npz"))
            raise ValueError(f"no model {spec!r} in the package (shipped: {shipped})")
        return mace.load(path, dtype=jdtype)
    if spec in MACE_MP_NAMES:
        return mace.load(mace_mp_checkpoint(spec), dtype=jdtype)
    if not Path(spec).exists():
        raise ValueError(f"[model] foundation {spec!r} is not a file, a MACE-MP name ({sorted(MACE_MP_NAMES)}), "
                         f"'package:NAME' or 'registry:NAME'")
    if spec.endswith(".nqx"):
        from slhmc_jax.models import nequix

        return nequix.load(spec, dtype=jdtype)
    return mace.load(spec, dtype=jdtype)
