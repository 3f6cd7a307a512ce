"""The backend registry, picking a backend by name, and the Pyncette 1.x import shims."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
import sniffio

import pyncette
import pyncette.memory
import pyncette.sqlite
from pyncette import Context, Pyncette, backends
from pyncette._install import install_hint
from pyncette.abc import Backend, Capabilities, Repository
from pyncette.backends import DuplicateBackendError
from pyncette.errors import BackendNotFound, ConfigurationError, PyncetteException
from pyncette.memory import MemoryRepository
from pyncette.options import Settings
from pyncette.testing import VirtualClock, running


def run_python(code: str, tmp_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )


# -- listing and loading ------------------------------------------------------------------------------


def test_available_lists_the_embedded_backend() -> None:
    listed = backends.available()
    names = [info.name for info in listed]
    assert names == sorted(names)
    assert len(names) == len(set(names))
    [sqlite] = [info for info in listed if info.name == "sqlite"]
    assert sqlite.distribution == "pyncette"
    assert sqlite.version == pyncette.__version__
    assert sqlite.value == "pyncette.sqlite:backend"


def test_available_does_not_import_backends() -> None:
    result = run_python(
        """
        import json, sys
        from pyncette import backends
        listed = backends.available()
        modules = sorted({info.value.partition(":")[0] for info in listed})
        print(json.dumps({"names": [i.name for i in listed], "imported": [m for m in modules if m in sys.modules]}))
        """
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "sqlite" in report["names"]
    assert report["imported"] == []


def test_load_sqlite() -> None:
    backend = backends.load("sqlite")
    assert backend is pyncette.sqlite.backend
    assert backend is pyncette.sqlite.sqlite_repository
    assert isinstance(backend, Backend)
    assert backend.name == "sqlite"


def test_first_party_backends_and_their_extras_come_from_package_metadata() -> None:
    # One extra per packages/backend-<name>/ folder, generated at build time from the folders themselves.
    folders = sorted(p.name.removeprefix("backend-") for p in Path(__file__).parents[2].glob("backend-*"))
    assert folders
    assert {name: name for name in folders} == backends.KNOWN_EXTRAS


def test_load_unknown_name_lists_installed() -> None:
    with pytest.raises(BackendNotFound, match=r"unknown backend 'nope'; installed backends: .*sqlite") as excinfo:
        backends.load("nope")
    assert isinstance(excinfo.value, LookupError)


_SQLITE = [ep for ep in backends._entry_points() if ep.name == "sqlite"][:1]


def sqlite_only() -> list[EntryPoint]:
    return list(_SQLITE)


@pytest.mark.parametrize("name", ["redis", "postgres", "mysql", "dynamodb"])
def test_known_first_party_backend_not_installed_names_the_extra(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setattr(backends, "_entry_points", sqlite_only)
    with pytest.raises(BackendNotFound) as excinfo:
        backends.load(name)
    message = str(excinfo.value)
    assert install_hint(name) in message  # the checkout's script for this development build (test_install.py)
    assert "installed backends: sqlite" in message
    assert [info.name for info in backends.available()] == ["sqlite"]


BAD = EntryPoint(name="bad", value="no_such_module_xyz:backend", group=backends.GROUP)


def test_broken_plugin_is_logged_reported_and_harmless(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(backends, "_entry_points", lambda: [BAD, *sqlite_only()])
    assert [info.name for info in backends.available()] == ["bad", "sqlite"]
    with caplog.at_level(logging.ERROR, logger="pyncette.backends"):
        report = backends.broken()
    assert set(report) == {"bad"}
    assert "no_such_module_xyz" in report["bad"]
    assert any("no_such_module_xyz" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    assert backends.load("sqlite") is pyncette.sqlite.backend
    with pytest.raises(PyncetteException, match=r"'bad' .*failed to import"):
        backends.load("bad")


def test_plugin_that_is_not_a_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = EntryPoint(name="wrong", value="os:sep", group=backends.GROUP)
    monkeypatch.setattr(backends, "_entry_points", lambda: [wrong])
    with pytest.raises(PyncetteException, match=r"'wrong' .*is not a pyncette.abc.Backend"):
        backends.load("wrong")
    assert "wrong" in backends.broken()


@dataclass
class FakeDist:
    name: str
    version: str


@dataclass
class FakeEntryPoint:
    name: str
    value: str
    dist: FakeDist

    def load(self) -> Any:
        return pyncette.sqlite.backend


def test_two_distributions_claiming_one_name(monkeypatch: pytest.MonkeyPatch) -> None:
    claims = [
        FakeEntryPoint("shared", "first_pkg:backend", FakeDist("first-dist", "1.0")),
        FakeEntryPoint("shared", "second_pkg:backend", FakeDist("second-dist", "2.5")),
    ]
    monkeypatch.setattr(backends, "_entry_points", lambda: [*claims, *sqlite_only()])
    with pytest.raises(DuplicateBackendError) as excinfo:
        backends.load("shared")
    message = str(excinfo.value)
    assert "'shared'" in message
    assert "first-dist 1.0" in message
    assert "second-dist 2.5" in message
    assert "shared" in backends.broken()
    assert backends.load("sqlite") is pyncette.sqlite.backend  # others still load


def test_one_distribution_seen_twice_is_not_a_duplicate(monkeypatch: pytest.MonkeyPatch) -> None:
    twice = [FakeEntryPoint("same", "pkg:backend", FakeDist("one-dist", "1.0")) for _ in range(2)]
    monkeypatch.setattr(backends, "_entry_points", lambda: twice)
    assert backends.load("same") is pyncette.sqlite.backend
    assert [(i.name, i.distribution) for i in backends.available()] == [("same", "one-dist")]


# -- choosing the backend of an app -------------------------------------------------------------------------


async def _runs_a_task(app: Pyncette) -> list[int]:
    seen: list[int] = []

    @app.task(interval=timedelta(seconds=1))
    async def tick(context: Context) -> None:
        seen.append(1)

    clock = VirtualClock()
    async with app.create(clock=clock) as ctx, running(ctx):
        await clock.advance(timedelta(seconds=3))
    return seen


@pytest.mark.anyio
async def test_backend_by_name(tmp_path: Path) -> None:
    app = Pyncette(backend="sqlite", sqlite_database=str(tmp_path / "x.db"))
    factory, capabilities = app.resolve_backend()
    assert factory is pyncette.sqlite.backend
    assert capabilities.persistent
    assert await _runs_a_task(app) == [1, 1, 1]
    assert (tmp_path / "x.db").exists()


@pytest.mark.anyio
async def test_default_is_the_memory_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYNCETTE_BACKEND", raising=False)
    app = Pyncette()
    factory, capabilities = app.resolve_backend()
    assert factory is pyncette.memory.backend
    assert not capabilities.persistent
    async with app.create(clock=VirtualClock()) as ctx:
        assert isinstance(ctx.repository, MemoryRepository)


@pytest.mark.anyio
async def test_sqlite_options_choose_sqlite_and_memory_is_real_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYNCETTE_BACKEND", raising=False)
    app = Pyncette(sqlite_database=":memory:")
    factory, capabilities = app.resolve_backend()
    assert factory is pyncette.sqlite.backend
    assert not capabilities.persistent and not capabilities.coordinated
    async with app.create(clock=VirtualClock()) as ctx:
        assert isinstance(ctx.repository, pyncette.sqlite.SqliteRepository)
    assert await _runs_a_task(app) == [1, 1, 1]


def test_unknown_option_is_refused_naming_it() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown option\(s\) colour: .*backend's name .*sqlite_"):
        Pyncette(colour="blue")
    with pytest.raises(ConfigurationError, match=r"unknown sqlite option\(s\) sqlite_colour; allowed: sqlite_database"):
        Pyncette(sqlite_colour="blue").resolve_backend()


@pytest.mark.anyio
async def test_environment_variable_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNCETTE_BACKEND", "sqlite")
    assert await _runs_a_task(Pyncette()) == [1, 1, 1]
    monkeypatch.setenv("PYNCETTE_BACKEND", "nope")
    with pytest.raises(BackendNotFound, match="'nope'"):
        async with Pyncette().create():
            pass
    # an explicit choice wins over the environment
    assert await _runs_a_task(Pyncette(backend="sqlite")) == [1, 1, 1]
    assert await _runs_a_task(Pyncette(repository_factory=pyncette.sqlite.sqlite_repository)) == [1, 1, 1]


@pytest.mark.anyio
async def test_unknown_backend_fails_at_create_with_the_listing() -> None:
    app = Pyncette(backend="nope")  # declaring is fine
    with pytest.raises(BackendNotFound, match=r"unknown backend 'nope'; installed backends: .*sqlite"):
        async with app.create():
            pass


def test_backend_and_repository_factory_together_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="repository_factory= or backend="):
        Pyncette(backend="sqlite", repository_factory=pyncette.sqlite.sqlite_repository)


class AsyncioOnlyBackend(Backend):
    name = "asynciotest"
    capabilities = Capabilities(asyncio_only=True)

    def open(self, settings: Settings) -> AbstractAsyncContextManager[Repository]:
        @contextlib.asynccontextmanager
        async def repository() -> AsyncIterator[Repository]:
            yield MemoryRepository()

        return repository()


@pytest.mark.anyio
async def test_asyncio_only_backend_is_refused_on_trio() -> None:
    app = Pyncette(repository_factory=AsyncioOnlyBackend())
    if sniffio.current_async_library() == "trio":
        with pytest.raises(ConfigurationError, match="only works on asyncio"):
            async with app.create():
                pass
    else:
        assert await _runs_a_task(app) == [1, 1, 1]


@pytest.mark.anyio
async def test_plain_callable_factory_as_in_1x() -> None:
    calls: list[dict[str, Any]] = []

    @contextlib.asynccontextmanager
    async def factory(**options: Any) -> AsyncIterator[Repository]:
        calls.append(options)
        yield MemoryRepository()

    app = Pyncette(repository_factory=factory, custom_option="x")
    assert await _runs_a_task(app) == [1, 1, 1]
    assert calls == [{"custom_option": "x"}]


# -- Pyncette 1.x import paths --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["redis", "postgres", "mysql", "dynamodb"])
def test_shim_without_the_package_says_how_to_install_it(name: str) -> None:
    result = run_python(
        f"""
        import sys
        sys.modules["pyncette_{name}"] = None
        try:
            import pyncette.{name}
        except ImportError as exc:
            print(type(exc).__name__, exc)
        else:
            print("imported")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ModuleNotFoundError"), result.stdout
    assert install_hint(name) in result.stdout


def test_redis_shim_with_the_package_installed() -> None:
    pytest.importorskip("pyncette_redis")
    import pyncette.redis
    import pyncette_redis

    assert pyncette.redis.redis_repository is pyncette_redis.backend
    assert pyncette.redis.redis_repository.name == "redis"


@pytest.mark.anyio
async def test_options_of_another_backend_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    app = Pyncette(redis_url="redis://localhost", sqlite_database=":memory:")
    with caplog.at_level(logging.WARNING, logger="pyncette"):
        async with app.create():
            pass
    messages = [r.getMessage() for r in caplog.records]
    assert any("redis_url" in m and "'sqlite'" in m for m in messages), messages
    assert not any("sqlite_database" in m for m in messages)
