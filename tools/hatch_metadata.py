"""Hatchling metadata hook shared by every distribution of the monorepo.

The single version lives in the repository's root ``VERSION`` file. Each
package lists its dependencies under ``[tool.pyncette]`` with ``{version}``
standing for that version, so sibling pins can never drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.metadata.plugin.interface import MetadataHookInterface


def _find_version(start: Path) -> str:
    for folder in (start, *start.parents):
        candidate = folder / "VERSION"
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8").strip()
    raise RuntimeError(f"no VERSION file found above {start}")


class PyncetteMetadataHook(MetadataHookInterface):
    """Fills in ``version``, ``dependencies`` and ``optional-dependencies``."""

    PLUGIN_NAME = "custom"

    def update(self, metadata: dict[str, Any]) -> None:
        version = _find_version(Path(self.root))
        metadata["version"] = version
        config = self.config
        if "dependencies" in config:
            metadata["dependencies"] = [d.format(version=version) for d in config["dependencies"]]
        if "optional-dependencies" in config:
            metadata["optional-dependencies"] = {
                extra: [d.format(version=version) for d in deps]
                for extra, deps in config["optional-dependencies"].items()
            }
