"""What made a report: package versions, the git commit of slhmc-jax, the devices, the host, the config's hash.

:func:`provenance` returns a JSON-ready dict (``report.json``'s ``provenance`` entry)::

    {"slhmc_jax": {"version": "0.1.0", "git_commit": "3f2a...", "git_dirty": false},
     "python": "3.11.9",
     "packages": {"jax": "0.4.35", "jaxlib": "0.4.35", "numpy": "2.1.3", ..., "mace-torch": null},
     "devices": [{"platform": "cpu", "kind": "cpu", "count": 1}],
     "host": {"cpu_count": 2, "machine": "x86_64", "system": "Linux-6.8..."},
     "config_sha256": "9c1e..." | null,
     "created_utc": "2025-01-31T12:00:00Z"}

Versions come from the installed distributions' metadata (``importlib.metadata``), so nothing
heavy is imported for them (a package not installed is ``null``). The git commit and whether the
tree has uncommitted changes to tracked files are read only where the package runs from a git
checkout (the checkout's top level holds the package), with read-only git commands that take no
index lock; anywhere else, or when git is missing or fails, they are ``null``. The devices are
JAX's (``jax.devices()``: platform, device kind, how many of each).
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

PACKAGES = ("jax", "jaxlib", "numpy", "scipy", "ase", "pyscf", "flax", "optax", "e3nn-jax", "arviz", "torch",
            "mace-torch")
DISTRIBUTION = "slhmc-jax"


def version(distribution: str) -> str | None:
    """The installed version of ``distribution`` (its metadata, nothing imported), or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(root: Path, *args: str) -> str | None:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # read-only: never refresh (lock) the index
    try:
        done = subprocess.run(["git", "-C", str(root), "--no-optional-locks", *args], capture_output=True, text=True,
                              timeout=10, env=env, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(package_dir: Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout the package runs from, or (None, None) elsewhere.

    ``dirty``: tracked files differ from the commit (untracked files do not count).
    """
    if package_dir is None:
        import slhmc_jax

        package_dir = Path(slhmc_jax.__file__).resolve().parent
    root = package_dir.parent
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root.resolve():
        return None, None  # not a checkout of this package (e.g. site-packages inside some other repository)
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return commit, None if status is None else bool(status)


def jax_devices() -> list | None:
    """[{"platform", "kind", "count"}] of JAX's devices, one entry per (platform, kind); None without JAX."""
    if version("jax") is None:
        return None
    try:
        import jax

        devices = jax.devices()
    except Exception:  # noqa: BLE001 - a broken backend must not break a report
        return None
    counts: dict = {}
    for d in devices:
        key = (str(d.platform), str(getattr(d, "device_kind", d.platform)))
        counts[key] = counts.get(key, 0) + 1
    return [{"platform": p, "kind": k, "count": n} for (p, k), n in counts.items()]


def host() -> dict:
    """CPU count (all, and those this process may use), machine and system of this host."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu_count": os.cpu_count(), "cpu_usable": usable, "machine": platform.machine(),
            "system": platform.platform()}


def config_sha256(config_text: str | None) -> str | None:
    """sha256 hex of the config text (UTF-8), or None."""
    return None if config_text is None else hashlib.sha256(config_text.encode("utf-8")).hexdigest()


def provenance(config_text: str | None = None) -> dict:
    """Versions, git commit, devices, host and config hash of this process (see the module docstring).

    Args:
        config_text: the run's configuration as text (e.g. its TOML); its sha256 is recorded.
    """
    commit, dirty = git_state()
    return {
        "slhmc_jax": {"version": version(DISTRIBUTION), "git_commit": commit, "git_dirty": dirty},
        "python": platform.python_version(),
        "packages": {name: version(name) for name in PACKAGES},
        "devices": jax_devices(),
        "host": host(),
        "config_sha256": config_sha256(config_text),
        "created_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
