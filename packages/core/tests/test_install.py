"""Installing from a checkout (``tools/install.py``) and the install hints, which must never point a
development build at the package index (where ``pyncette`` is 1.x)."""

from __future__ import annotations

import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pyncette import _install, backends
from pyncette._install import install_command, install_hint, installed_version, is_release
from pyncette.errors import BackendNotFound

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "tools" / "install.py"
VERSION = (ROOT / "VERSION").read_text(encoding="utf-8").strip()


@pytest.mark.parametrize("release", ["2.0.0", "2.1.3", "2.0.0rc1", "2.0.0.post1"])
def test_a_release_hints_the_pinned_extra(release: str) -> None:
    assert is_release(release)
    assert install_command("redis", release) == f'pip install "pyncette[redis]=={release}"'
    assert install_hint("redis", release) == f'install it with: pip install "pyncette[redis]=={release}"'


@pytest.mark.parametrize("release", ["2.0.0.dev0", "2.0.0.dev3", "2.0.0+local.1"])
def test_a_development_build_hints_the_checkout_script(release: str) -> None:
    assert not is_release(release)
    assert install_command("postgres", release) == "python tools/install.py postgres"
    hint = install_hint("postgres", release)
    assert hint.startswith("install it from the Pyncette checkout with: python tools/install.py postgres ")
    assert f"development build {release}" in hint
    assert "pip install" not in hint


def test_without_metadata_the_checkout_script_is_hinted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_install, "installed_version", lambda: None)
    assert not is_release(None)
    assert install_command("mysql") == "python tools/install.py mysql"
    assert "an uninstalled source tree" in install_hint("mysql")


def test_the_installed_version_is_the_checkouts() -> None:
    assert installed_version() == VERSION


def test_backend_not_found_hint_follows_the_installed_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "_entry_points", list)
    checkout = r"install it from the Pyncette checkout with: python tools/install.py redis"
    with pytest.raises(BackendNotFound, match=checkout):
        backends.load("redis")
    monkeypatch.setattr(_install, "installed_version", lambda: "2.4.0")
    with pytest.raises(BackendNotFound, match=r'install it with: pip install "pyncette\[redis\]==2\.4\.0"$'):
        backends.load("redis")


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False)


def test_script_dry_run_names_the_local_folders() -> None:
    done = run_script("redis", "prometheus", "--dry-run", "--", "--no-cache-dir")
    assert done.returncode == 0, done.stderr
    packages = ROOT / "packages"
    assert shlex.split(done.stdout) == [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-cache-dir",
        f"{packages / 'core'}[prometheus]",
        str(packages / "backend-redis"),
    ]
    everything = shlex.split(run_script("all", "-e", "--dry-run").stdout)
    backend_folders = sorted(str(p) for p in packages.glob("backend-*"))
    assert everything[4:] == [
        "-e",
        f"{packages / 'core'}[prometheus,otel]",
        *(word for folder in backend_folders for word in ("-e", folder)),
    ]


def test_script_refuses_unknown_parts() -> None:
    done = run_script("redis", "mongodb", "--dry-run")
    assert done.returncode == 2
    assert (
        "unknown part(s) mongodb; choose from: dynamodb, mysql, postgres, redis, prometheus, otel, dashboard, all"
        in done.stderr
    )


@pytest.mark.timeout(600)
def test_script_installs_into_a_fresh_venv(tmp_path: Path) -> None:
    """The documented command, end to end: pip resolves the backend's pin on the core to the local core."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    done = subprocess.run(
        [str(python), str(SCRIPT), "redis", "--", "--quiet", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    check = subprocess.run(
        [
            str(python),
            "-c",
            textwrap.dedent(
                """
                from importlib.metadata import version
                import pyncette.backends
                from pyncette.redis import redis_repository
                print(version("pyncette"), version("pyncette-redis"))
                print(*(b.name for b in pyncette.backends.available()))
                try:
                    import pyncette.postgres
                except ImportError as exc:
                    print(exc)
                """
            ),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the checkout: the installed packages, not the sources
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    versions, names, hint = check.stdout.splitlines()
    assert versions == f"{VERSION} {VERSION}"
    assert names == "memory redis sqlite"
    assert "install it from the Pyncette checkout with: python tools/install.py postgres" in hint


def test_prometheus_without_its_client_names_the_checkout_command() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys
                sys.modules["prometheus_client"] = None
                try:
                    import pyncette.prometheus
                except ImportError as exc:
                    print(type(exc).__name__, exc)
                """
            ),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ModuleNotFoundError pyncette.prometheus needs prometheus-client; "), done.stdout
    assert install_hint("prometheus") in done.stdout
    assert "python tools/install.py prometheus" in done.stdout
