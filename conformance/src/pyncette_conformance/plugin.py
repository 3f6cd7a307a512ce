"""The pytest plugin (``pytest11`` entry point): command-line options and marker registration.

Run the whole suite against an installed backend::

    pytest --pyargs pyncette_conformance --pyncette-backend redis \\
        --pyncette-option redis_url=redis://localhost:6379/0

Options can also come from the environment as ``PYNCETTE_<NAME>`` (for example
``PYNCETTE_REDIS_URL``), the same variables the ``pyncette`` command reads, and the
backend from ``PYNCETTE_BACKEND``. Values are text, converted by the backend's option schema.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from pyncette import backends

from .harness import BackendUnderTest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pyncette", "Pyncette backend conformance")
    group.addoption(
        "--pyncette-backend",
        default=None,
        help="entry-point name of the backend to test (default: $PYNCETTE_BACKEND or 'sqlite')",
    )
    group.addoption(
        "--pyncette-skip",
        action="append",
        default=[],
        metavar="TEST=REASON",
        help="skip a standard test by name, giving the reason (e.g. an emulator that cannot pass it); repeatable",
    )
    group.addoption(
        "--pyncette-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="backend option, repeatable (e.g. redis_url=redis://localhost)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pyncette_requires(*capabilities): needs these backend capabilities")
    config.addinivalue_line("markers", "realtime: uses real time or real OS processes on purpose")


def backend_from_config(config: pytest.Config) -> BackendUnderTest:
    """Build the backend under test from ``--pyncette-backend`` / ``--pyncette-option`` and the environment."""
    name = config.getoption("--pyncette-backend") or os.environ.get("PYNCETTE_BACKEND") or "sqlite"
    backend = backends.load(name)
    options: dict[str, Any] = dict(backend.options.from_environment())
    for item in config.getoption("--pyncette-option"):
        key, sep, value = item.partition("=")
        if not sep:
            raise pytest.UsageError(f"--pyncette-option expects KEY=VALUE, got {item!r}")
        options[key.strip()] = value
    backend.settings(options)  # a bad option fails at once, naming it
    skip: dict[str, str] = {}
    for item in config.getoption("--pyncette-skip"):
        test, sep, reason = item.partition("=")
        if not sep or not test.strip() or not reason.strip():
            raise pytest.UsageError(f"--pyncette-skip expects TEST=REASON (a reason is required), got {item!r}")
        skip[test.strip()] = reason.strip()
    return BackendUnderTest(backend, options, skip=skip)
