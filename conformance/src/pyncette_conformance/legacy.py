"""Pyncette 1.1.0, installed in a virtual environment of its own, for tests and benchmarks that compare with it
or create 1.x data to migrate.

The environment is created on first use with ``python3 -m venv`` and
``pip install "pyncette[redis,postgres,mysql,dynamodb]==1.1.0"`` (from the package index), in
``$PYNCETTE_LEGACY_VENV`` or ``~/.cache/pyncette-legacy/venv-1.1.0``, and reused afterwards. Scripts run
there in a temporary working directory, so they import 1.1.0, never the workspace's packages.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

LEGACY_VERSION = "1.1.0"
LEGACY_EXTRAS = "redis,postgres,mysql,dynamodb"


def legacy_venv() -> Path:
    """Where the 1.1.0 environment lives (it may not exist yet)."""
    configured = os.environ.get("PYNCETTE_LEGACY_VENV")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "pyncette-legacy" / f"venv-{LEGACY_VERSION}"


def legacy_python() -> Path:
    """The python of the 1.1.0 environment, created on first use (needs the package index)."""
    venv = legacy_venv()
    python = venv / "bin" / "python"
    marker = venv / ".complete"
    if not marker.exists():
        print(f"creating {venv} with pyncette=={LEGACY_VERSION} ...", file=sys.stderr)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"pyncette[{LEGACY_EXTRAS}]=={LEGACY_VERSION}"],
            check=True,
        )
        marker.touch()
    return python


def run_legacy(
    script: str | Path, *args: str, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a script (a path, or Python source) with 1.1.0's python; returns the finished process."""
    python = legacy_python()
    with tempfile.TemporaryDirectory(prefix="pyncette-legacy-") as workdir:
        if isinstance(script, str):
            path = Path(workdir) / "script.py"
            path.write_text(script, encoding="utf-8")
        else:
            path = script
        return subprocess.run(
            [str(python), str(path), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=workdir,  # never import the workspace's pyncette
            env={**os.environ, **(env or {})},
            check=False,
        )


__all__ = ["LEGACY_VERSION", "legacy_python", "legacy_venv", "run_legacy"]
