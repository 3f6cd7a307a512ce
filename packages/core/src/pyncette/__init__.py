"""Pyncette: reliable, distributed cron and delayed-task scheduling for async Python."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pyncette")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0+unknown"

__all__ = ["__version__"]
