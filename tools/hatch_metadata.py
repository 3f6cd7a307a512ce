"""Hatchling metadata hook shared by every distribution of the monorepo.

The single version lives in the repository's root ``VERSION`` file. Each package lists its
dependencies in its ``[tool.hatch.metadata.hooks.custom]`` table, with ``{version}`` standing for
that version, so sibling pins can never drift apart.

With ``backend-extras = true`` (the core package), every ``packages/backend-<name>/`` folder
beside it becomes an extra ``<name>`` requiring ``pyncette-<name>=={version}``, and ``all``
collects them with the extras listed under ``all-also``: a new backend folder is the only thing
to add. Built from an sdist (no sibling folders), the extras are read back from its ``PKG-INFO``.
"""

from __future__ import annotations

from email.parser import Parser
from pathlib import Path
from typing import Any

from hatchling.metadata.plugin.interface import MetadataHookInterface


def _find_version(start: Path) -> str:
    for folder in (start, *start.parents):
        candidate = folder / "VERSION"
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8").strip()
    raise RuntimeError(f"no VERSION file found above {start}")


def backend_names(core: Path) -> list[str]:
    """The first-party backends: ``packages/backend-<name>/`` folders beside the core package."""
    return sorted(
        folder.name.removeprefix("backend-")
        for folder in core.parent.glob("backend-*")
        if (folder / "pyproject.toml").is_file()
    )


def _extras_from_pkg_info(root: Path) -> dict[str, list[str]]:
    info = Parser().parsestr((root / "PKG-INFO").read_text(encoding="utf-8"))
    extras: dict[str, list[str]] = {extra: [] for extra in info.get_all("Provides-Extra") or []}
    for requirement in info.get_all("Requires-Dist") or []:
        spec, _, marker = requirement.partition(";")
        for extra in extras:
            if f'extra == "{extra}"' in marker or f"extra == '{extra}'" in marker:
                extras[extra].append(spec.strip())
    return extras


class PyncetteMetadataHook(MetadataHookInterface):
    """Fills in ``version``, ``dependencies`` and ``optional-dependencies``."""

    PLUGIN_NAME = "custom"

    def update(self, metadata: dict[str, Any]) -> None:
        root = Path(self.root)
        version = _find_version(root)
        metadata["version"] = version
        config = self.config
        if "dependencies" in config:
            metadata["dependencies"] = [d.format(version=version) for d in config["dependencies"]]
        extras: dict[str, list[str]] = {
            extra: [d.format(version=version) for d in deps]
            for extra, deps in config.get("optional-dependencies", {}).items()
        }
        if config.get("backend-extras"):
            names = backend_names(root)
            if names:
                backends = {name: [f"pyncette-{name}=={version}"] for name in names}
                also = [d.format(version=version) for d in config.get("all-also", [])]
                extras.update(backends, all=[*(pin for pins in backends.values() for pin in pins), *also])
            elif (root / "PKG-INFO").is_file():
                extras.update({k: v for k, v in _extras_from_pkg_info(root).items() if k not in extras})
            else:
                raise RuntimeError(f"no packages/backend-* folders beside {root} and no PKG-INFO")
        if extras:
            metadata["optional-dependencies"] = extras
