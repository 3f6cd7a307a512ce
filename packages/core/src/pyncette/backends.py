"""The backend registry: installed backends, found through the ``pyncette.backends`` entry-point group.

:func:`available` lists them from package metadata alone, without importing
any plugin; :func:`load` imports one by name. A plugin that fails to import is
logged and reported, and never hides the others.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points, requires

from .abc import Backend
from .errors import BackendNotFound, PyncetteException
from .options import Options

logger = logging.getLogger(__name__)

GROUP = "pyncette.backends"


def _first_party_extras() -> dict[str, str]:
    """First-party backends and the extra of ``pyncette`` that installs each, read from the package metadata.

    Every extra that requires a ``pyncette-<name>`` distribution installs the backend ``<name>``, so a
    new ``packages/backend-<name>/`` folder (which the build turns into such an extra) is known here too.
    """
    try:
        requirements = requires("pyncette") or []
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
        return {}
    found = {}
    for requirement in requirements:
        match = _EXTRA_REQUIREMENT.match(requirement)
        if match and match["backend"] == match["extra"]:
            found[match["backend"]] = match["extra"]
    return found


_EXTRA_REQUIREMENT = re.compile(r"""^pyncette-(?P<backend>[a-z0-9]+)\b.*extra\s*==\s*["'](?P<extra>[a-z0-9]+)["']""")

#: First-party backends and the extra that installs each.
KNOWN_EXTRAS = _first_party_extras()


@dataclass(frozen=True)
class BackendInfo:
    """An installed backend as described by its distribution's metadata."""

    name: str
    distribution: str
    version: str
    value: str


class DuplicateBackendError(PyncetteException):
    """Two installed distributions register a backend under the same name."""


def _entry_points() -> list[EntryPoint]:
    return list(entry_points(group=GROUP))


def _describe(ep: EntryPoint) -> BackendInfo:
    dist = ep.dist
    return BackendInfo(
        name=ep.name,
        distribution=dist.name if dist is not None else "<unknown>",
        version=dist.version if dist is not None else "<unknown>",
        value=ep.value,
    )


def _by_name() -> dict[str, list[EntryPoint]]:
    found: dict[str, list[EntryPoint]] = {}
    for ep in _entry_points():
        group = found.setdefault(ep.name, [])
        # The same distribution can be visible twice (e.g. an editable install on sys.path twice).
        if not any(_describe(other).distribution == _describe(ep).distribution for other in group):
            group.append(ep)
    return found


def known_names() -> set[str]:
    """The names of installed backends and of the first-party ones that could be installed."""
    return {*KNOWN_EXTRAS, *_by_name()}


def available() -> list[BackendInfo]:
    """Installed backends (name, distribution, version), sorted by name, without importing them."""
    return sorted((_describe(eps[0]) for eps in _by_name().values()), key=lambda info: info.name)


def _check_unique(name: str, eps: list[EntryPoint]) -> EntryPoint:
    if len(eps) > 1:
        owners = " and ".join(f"{i.distribution} {i.version} ({i.value})" for i in map(_describe, eps))
        raise DuplicateBackendError(f"backend name {name!r} is registered by more than one distribution: {owners}")
    return eps[0]


def load(name: str) -> Backend:
    """Import and return the backend registered as ``name``.

    Raises :class:`~pyncette.errors.BackendNotFound` for an unknown name (listing
    the installed ones, and naming the extra to install for a first-party
    backend), :class:`DuplicateBackendError` when two distributions claim the
    name, and :class:`~pyncette.errors.PyncetteException` when the plugin fails
    to import.
    """
    found = _by_name()
    if name not in found:
        installed = ", ".join(sorted(found)) or "none"
        if name in KNOWN_EXTRAS:
            raise BackendNotFound(
                f'backend {name!r} is not installed; install it with: pip install "pyncette[{KNOWN_EXTRAS[name]}]" '
                f"(installed backends: {installed})"
            )
        raise BackendNotFound(f"unknown backend {name!r}; installed backends: {installed}")
    ep = _check_unique(name, found[name])
    try:
        backend = ep.load()
    except Exception as exc:
        logger.error("backend plugin %r (%s) failed to import: %s", name, ep.value, exc)
        raise PyncetteException(f"backend plugin {name!r} ({ep.value}) failed to import: {exc}") from exc
    if not isinstance(backend, Backend):
        raise PyncetteException(f"backend plugin {name!r} ({ep.value}) is not a pyncette.abc.Backend: {backend!r}")
    if not isinstance(backend.options, Options):
        raise PyncetteException(
            f"backend plugin {name!r} ({ep.value}) declares its options as {type(backend.options).__name__}, "
            "not pyncette.options.Options (written for an older Pyncette?)"
        )
    return backend


def broken() -> dict[str, str]:
    """Try to import every installed backend; map the names of those that fail to their error."""
    errors: dict[str, str] = {}
    for name in _by_name():
        try:
            load(name)
        except PyncetteException as exc:
            errors[name] = str(exc)
    return errors


__all__ = ["GROUP", "BackendInfo", "DuplicateBackendError", "available", "broken", "known_names", "load"]
