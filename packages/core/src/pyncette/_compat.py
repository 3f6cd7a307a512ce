"""Support for the Pyncette 1.x import paths of backends that now live in their own distributions."""

from __future__ import annotations

import importlib
from types import ModuleType

from ._install import install_hint


def import_backend_package(module: str, extra: str) -> ModuleType:
    """Import ``module``; if it is not installed, raise an ImportError that says how to install it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        raise ModuleNotFoundError(
            f"the {extra} backend is not installed; {install_hint(extra)}",
            name=module,
        ) from exc
