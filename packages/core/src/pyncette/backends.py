"""The backend registry: installed backends, found through the ``pyncette.backends`` entry-point group.

:func:`available` lists them from package metadata alone, without importing
any plugin; :func:`load` imports one by name. A plugin that fails to import is
logged and reported, and never hides the others.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points, requires
from typing import Any

from ._install import install_hint
from .abc import Backend, Capabilities
from .errors import BackendNotFound, ConfigurationError, PyncetteException
from .options import Options
from .redaction import get_logger

logger = get_logger(__name__)

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
        if match and match["backend"] == match["extra"] and match["backend"] not in NOT_BACKENDS:
            found[match["backend"]] = match["extra"]
    return found


#: First-party distributions named ``pyncette-<name>`` with an extra of that name that are not backends.
NOT_BACKENDS = frozenset({"dashboard"})

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
                f"backend {name!r} is not installed (installed backends: {installed}); "
                + install_hint(KNOWN_EXTRAS[name])
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


def check_option_names(options: Mapping[str, Any], factory: object = None) -> None:
    """Every backend option must carry a backend's prefix: an unknown keyword is a mistake, never ignored.

    A custom (1.x style) repository factory receives every option, so its own are not checked here.
    """
    if factory is not None and not isinstance(factory, Backend):
        return
    names = known_names()
    if isinstance(factory, Backend):
        names.add(factory.name)
    prefixes = {f"{name}_" for name in names}
    unknown = sorted(k for k in options if not any(k.startswith(p) for p in prefixes))
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {', '.join(unknown)}: Pyncette() takes repository_factory, executor_cls, backend, "
            "poll_interval, concurrency_limit, batch_size, drain_timeout and backend options prefixed with a "
            f"backend's name ({', '.join(sorted(prefixes))})"
        )


def pick(factory: Any, name: str | None, options: Mapping[str, Any]) -> Any:
    """The repository factory an app uses: ``factory`` when given, else the backend ``name``, else
    ``$PYNCETTE_BACKEND``, else ``sqlite`` when ``sqlite_*`` options are given, else ``memory``."""
    if factory is None:
        default = "sqlite" if any(k.startswith("sqlite_") for k in options) else "memory"
        factory = load(name or os.environ.get("PYNCETTE_BACKEND") or default)
    return factory


def choose(factory: Any, name: str | None, options: Mapping[str, Any]) -> tuple[Any, Capabilities]:
    """The repository factory an app uses (see :func:`pick`) and what it declares it can do with ``options``
    (which are validated)."""
    factory = pick(factory, name, options)
    if isinstance(factory, Backend):
        return factory, factory.capabilities_for(factory.settings(options))
    return factory, Capabilities()


def warn_about_foreign_options(factory: object, options: Mapping[str, Any]) -> None:
    """Options meant for another backend are ignored; say so, since it is usually a mistake."""
    if not isinstance(factory, Backend):
        return
    others = known_names() - {factory.name}
    foreign = sorted(k for k in options if any(k.startswith(f"{name}_") for name in others))
    if foreign:
        logger.warning(
            "Ignoring option(s) %s: the app uses the %r backend (pass backend= or repository_factory= to "
            "choose another)",
            ", ".join(foreign),
            factory.name,
        )


def broken() -> dict[str, str]:
    """Try to import every installed backend; map the names of those that fail to their error."""
    errors: dict[str, str] = {}
    for name in _by_name():
        try:
            load(name)
        except PyncetteException as exc:
            errors[name] = str(exc)
    return errors


__all__ = [
    "GROUP",
    "BackendInfo",
    "DuplicateBackendError",
    "available",
    "broken",
    "check_option_names",
    "choose",
    "known_names",
    "load",
    "pick",
    "warn_about_foreign_options",
]
