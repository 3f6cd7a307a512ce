"""What the suite needs from a backend: a descriptor and isolated options per test."""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyncette.abc import Backend, Capabilities, Repository


async def implements(under_test: BackendUnderTest, hook: str) -> bool:
    """Whether the backend's repositories override an optional testing hook of :class:`Repository`."""
    repository_class = await under_test.learn_repository_class()
    return getattr(repository_class, hook) is not getattr(Repository, hook)


@dataclass
class BackendUnderTest:
    """A backend plus the options that point it at fresh, empty, isolated storage.

    ``base_options`` are shared settings (server URL, credentials).
    :meth:`isolated_options` adds a unique namespace on every call, from the
    backend's :meth:`~pyncette.abc.Backend.isolated_options` (the options its
    schema declares as isolating, plus whatever the backend adds, such as a
    file), so two calls give two apps that cannot see each other. Every
    namespace handed out is purged when the test ends (see :meth:`aclose`).
    """

    backend: Backend
    base_options: Mapping[str, Any] = field(default_factory=dict)
    #: Real seconds the virtual clock waits for work to stop before failing a test (slow emulators need more).
    settle_timeout: float = 300.0
    #: Standard tests to skip, by name, each with the reason (say why the storage, not the backend, cannot pass:
    #: e.g. an emulator whose index queries scan everything). Shown in the test report.
    skip: Mapping[str, str] = field(default_factory=dict)
    #: The class of the repositories the backend opens, learnt from the first one opened (see :func:`implements`).
    repository_class: type[Repository] | None = None
    _issued: list[dict[str, Any]] = field(default_factory=list)
    _tempdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def capabilities(self) -> Capabilities:
        """What the backend declares for these options."""
        return self.backend.capabilities_for(self.backend.settings(self._options_for("probe")))

    def _options_for(self, unique: str) -> dict[str, Any]:
        if self._tempdir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="pyncette-conformance-")
        fresh = self.backend.isolated_options(unique, Path(self._tempdir.name))
        return {**fresh, **self.base_options}

    def isolated_options(self) -> dict[str, Any]:
        """Options for a new isolated namespace; call once and share the result between apps that must share storage."""
        options = self._options_for("t" + uuid.uuid4().hex[:12])
        self._issued.append(options)
        return options

    @contextlib.asynccontextmanager
    async def repository(self, options: Mapping[str, Any] | None = None) -> AsyncIterator[Repository]:
        """Open a repository directly (no app) on ``options`` or on a fresh namespace."""
        chosen = options if options is not None else self.isolated_options()
        async with self.backend.open(self.backend.settings(chosen)) as repository:
            self.repository_class = type(repository)
            yield repository

    async def learn_repository_class(self) -> type[Repository]:
        """Open (and close) a repository once to learn its class."""
        if self.repository_class is None:
            async with self.repository():
                pass
        assert self.repository_class is not None
        return self.repository_class

    async def aclose(self) -> None:
        """Purge every namespace handed out."""
        for options in self._issued:
            with contextlib.suppress(Exception):
                await self.backend.purge(self.backend.settings(options))
        self._issued.clear()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None
