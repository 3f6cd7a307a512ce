"""``pyncette dashboard`` and ``pyncette run --dashboard`` as processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from pyncette import cli

APP = Path(__file__).resolve().parent / "board_app.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.realtime
@pytest.mark.timeout(60)
def test_run_serves_the_dashboard_beside_the_app(tmp_path: Path, wait_for: Any) -> None:
    port = _free_port()
    log = tmp_path / "runs.log"
    env = {**os.environ, "DASHBOARD_TEST_LOG": str(log), "PYNCETTE_DASHBOARD_TOKEN": "t" * 24}
    database = f"sqlite_database={tmp_path / 'db.sqlite'}"
    command = [sys.executable, "-m", "pyncette", "run", str(APP), "--backend", "sqlite", "-o", database,
               "--dashboard", f"127.0.0.1:{port}", "--dashboard-actions"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:

        def overview() -> Any:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/overview", timeout=2)
            except httpx.HTTPError:
                return None
            return response.json() if response.status_code == 200 else None

        body = wait_for(overview, "the dashboard of the running app")
        assert {t["name"] for t in body["tasks"]} == {"tick", "nightly", "remind"}
        assert body["actions"] == "token"
        ran = httpx.post(
            f"http://127.0.0.1:{port}/api/tasks/nightly/run",
            json={},
            headers={"X-Pyncette-Token": "t" * 24},
            timeout=5,
        )
        assert ran.status_code == 200 and ran.json()["result"] == "queued"
        wait_for(lambda: log.exists() and "nightly" in log.read_text(), "the run triggered through the dashboard")
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output.decode()
    assert b"t" * 24 not in output


def test_actions_need_the_token_variable(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYNCETTE_DASHBOARD_TOKEN", raising=False)
    assert cli.main(["dashboard", str(APP), "--actions", "--token-env", "MY_TOKEN"]) == 2
    assert "set the environment variable MY_TOKEN" in capsys.readouterr().err
    assert cli.main(["run", str(APP), "--dashboard-actions"]) == 2
    assert "need --dashboard" in capsys.readouterr().err


def test_missing_dashboard_names_the_extra(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyncette_dashboard", None)
    assert cli.main(["dashboard", str(APP)]) == 2
    assert 'pip install "pyncette[dashboard]"' in capsys.readouterr().err
