"""``slhmc_jax.observables`` is the public name of :mod:`slhmc_jax.analysis.observables`.

The structural observables live in ``analysis/`` with the rest of the comparison; this alias keeps the
documented public path (DESIGN.md) working and is the same module object, not a copy.
"""

import sys

from slhmc_jax.analysis import observables

sys.modules[__name__] = observables
