"""Shared helpers of the benchmark scripts: backend options, the moto server, the 1.1.0 venv, output.

Not a test module: run the scenarios through ``hatch run bench:<scenario>``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pyncette_conformance import legacy

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
LEGACY_VERSION = legacy.LEGACY_VERSION
BACKENDS = ("memory", "sqlite", "redis", "postgres", "mysql", "dynamodb")

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL = {
    "host": os.environ.get("MYSQL_HOST", "127.0.0.1"),
    "port": int(os.environ.get("MYSQL_PORT", "3306")),
    "user": os.environ.get("MYSQL_USER", "root"),
    "password": os.environ.get("MYSQL_PASSWORD", ""),
    "database": os.environ.get("MYSQL_DATABASE", "test"),
}

for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ.setdefault(_name, _value)


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backend", choices=BACKENDS, default="sqlite")
    parser.add_argument(
        "--against",
        default=None,
        help=f"also run pyncette=={LEGACY_VERSION} in an isolated venv (only {LEGACY_VERSION})",
    )
    parser.add_argument("--no-json", action="store_true", help="do not write benchmarks/results/*.json")
    return parser


def backend_options(
    backend: str, tag: str, *, workdir: Path, endpoint: str | None = None
) -> tuple[str, dict[str, Any]]:
    """(registry name, options) of our backend for one benchmark; ``tag`` keeps tables/namespaces apart."""
    if backend == "memory":
        return "memory", {}
    if backend == "sqlite":
        return "sqlite", {"sqlite_database": str(workdir / f"{tag}.db")}
    if backend == "redis":
        return "redis", {"redis_url": REDIS_URL, "redis_namespace": tag}
    if backend == "postgres":
        return "postgres", {"postgres_url": POSTGRES_URL, "postgres_table_name": tag}
    if backend == "mysql":
        return "mysql", {
            "mysql_host": MYSQL["host"],
            "mysql_port": MYSQL["port"],
            "mysql_user": MYSQL["user"],
            "mysql_password": MYSQL["password"] or None,
            "mysql_database": MYSQL["database"],
            "mysql_table_name": tag,
        }
    if backend == "dynamodb":
        assert endpoint is not None
        return "dynamodb", {
            "dynamodb_endpoint": endpoint,
            "dynamodb_region_name": "us-east-1",
            "dynamodb_table_name": tag,
        }
    raise ValueError(backend)


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto server (one request at a time, as the dynamodb tests use it) on a free loopback port; yields its URL."""
    configured = os.environ.get("DYNAMODB_ENDPOINT")
    if configured:
        yield configured
        return
    from pyncette_conformance.servers import MotoServer

    with MotoServer() as server:
        yield server.url


@contextlib.contextmanager
def maybe_moto(backend: str) -> Iterator[str | None]:
    if backend != "dynamodb":
        yield None
        return
    with moto_server() as url:
        yield url


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pyncette-bench-") as name:
        yield Path(name)


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB.

    ``VmHWM`` from /proc (Linux), because ``ru_maxrss`` survives ``execve`` and so would report the parent's
    peak in a freshly started worker; ``ru_maxrss`` (KiB on Linux) elsewhere.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def purge(name: str, options: dict[str, Any]) -> None:
    """Remove the storage a benchmark used (table, namespace, file)."""
    from pyncette import backends

    backend = backends.load(name)
    await backend.purge(backend.settings(options))


def run_legacy(script: str, args: Sequence[str], timeout: float = 1800) -> dict[str, Any]:
    """Run ``benchmarks/<script>`` with the 1.1.0 venv's python; it prints one JSON object as its last line."""
    proc = legacy.run_legacy(ROOT / "benchmarks" / script, *args, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if abs(value) < 10:
            return f"{value:.2f}"
        return f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Print (and return) a Markdown table."""
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    text = "\n".join(lines)
    print(text)
    return text


def ratio(ours: Any, legacy: Any) -> str:
    if isinstance(ours, int | float) and isinstance(legacy, int | float) and legacy:
        return f"{ours / legacy:.1f}x"
    return "n/a"


def write_json(scenario: str, backend: str, payload: dict[str, Any], *, disabled: bool = False) -> None:
    if disabled:
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{scenario}-{backend}.json"
    payload = {"scenario": scenario, "backend": backend, "machine": machine(), "command": " ".join(sys.argv), **payload}
    path.write_text(json.dumps(payload, indent=2, default=str))
    print(f"\nwrote {path.relative_to(ROOT)}")
