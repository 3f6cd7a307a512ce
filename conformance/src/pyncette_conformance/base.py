"""The base class every conformance test class derives from, and its fixtures."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from pyncette.abc import Repository

from .harness import BackendUnderTest

if TYPE_CHECKING:
    from .behaviour import AppFactory

F = TypeVar("F", bound=Callable[..., Any])

_CAPABILITY_MARK = "pyncette_requires"


def requires(*capabilities: str) -> Callable[[F], F]:
    """Mark a test as needing backend capabilities; it is skipped, with the reason, when one is absent."""
    mark: Callable[[F], F] = getattr(pytest.mark, _CAPABILITY_MARK)(*capabilities)
    return mark


def _is_standard(cls: type) -> bool:
    return cls.__module__.startswith("pyncette_conformance.") and cls.__module__ != "pyncette_conformance.base"


@pytest.mark.anyio
class ConformanceBase:
    """Fixtures shared by every conformance test class.

    A backend's test module subclasses the standard classes and overrides the
    ``pyncette_backend`` fixture to yield a :class:`BackendUnderTest`. Without an
    override, the backend named by ``--pyncette-backend`` is used.
    """

    @pytest.fixture
    def anyio_backend(self) -> str:
        """asyncio by default; override (e.g. parametrized over "asyncio" and "trio") to run on trio too."""
        return "asyncio"

    @pytest.fixture
    async def pyncette_backend(self, pytestconfig: pytest.Config) -> AsyncIterator[BackendUnderTest]:
        from .plugin import backend_from_config

        under_test = backend_from_config(pytestconfig)
        try:
            yield under_test
        finally:
            await under_test.aclose()

    @pytest.fixture(autouse=True)
    def _check_capabilities(self, request: pytest.FixtureRequest, pyncette_backend: BackendUnderTest) -> None:
        reason = pyncette_backend.skip.get(getattr(request.node, "originalname", request.node.name))
        if reason:
            pytest.skip(f"skipped for this backend: {reason}")
        declared = pyncette_backend.capabilities
        for mark in request.node.iter_markers(_CAPABILITY_MARK):
            for capability in mark.args:
                if not getattr(declared, capability):
                    pytest.skip(f"backend {pyncette_backend.backend.name!r} does not declare capability {capability!r}")

    @pytest.fixture
    def apps(self, pyncette_backend: BackendUnderTest) -> AppFactory:
        """Apps sharing one isolated storage namespace and one virtual clock."""
        from .behaviour import AppFactory  # behaviour imports this module

        return AppFactory(pyncette_backend)

    @pytest.fixture
    async def repository(self, pyncette_backend: BackendUnderTest) -> AsyncIterator[Repository]:
        async with pyncette_backend.repository() as repository:
            yield repository

    async def test_standard_tests_are_not_silenced(self) -> None:
        """Overriding a standard test is allowed only as an explicit ``xfail`` with a reason."""
        silenced = []
        for klass in type(self).__mro__:
            if not _is_standard(klass):
                continue
            for name, standard in vars(klass).items():
                if not name.startswith("test_"):
                    continue
                current = inspect.getattr_static(type(self), name)
                if current is standard:
                    continue
                marks = getattr(current, "pytestmark", [])
                if not any(m.name == "xfail" and m.kwargs.get("reason") for m in marks):
                    silenced.append(f"{klass.__name__}.{name}")
        assert not silenced, (
            "standard conformance tests overridden without @pytest.mark.xfail(reason=...): "
            + ", ".join(sorted(silenced))
        )
