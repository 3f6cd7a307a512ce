"""The ``pyncette`` command line, end to end in subprocesses, against a SQLite file and Redis."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import pytest

from pyncette import backends
from pyncette.cli import build_parser, configure_app, load_app, main
from pyncette.errors import ConfigurationError

pytestmark = pytest.mark.realtime

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

APP_MODULE = """\
from datetime import timedelta

from pyncette import Context, Pyncette

app = Pyncette(poll_interval=timedelta(milliseconds=100))
not_an_app = 42


@app.task(interval=timedelta(milliseconds=300))
async def tick(context: Context) -> None:
    print("tick ran", flush=True)


@app.dynamic_task()
async def reminder(context: Context) -> None:
    print(f"reminder {context.task.name} for {context.args.get('user')}", flush=True)
"""


@dataclass
class Cli:
    """Runs ``python -m pyncette`` with the test app on PYTHONPATH and a given storage."""

    directory: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def __call__(
        self, *args: str, storage: bool = True, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PYNCETTE_")}
        environment["PYTHONPATH"] = os.pathsep.join([str(self.directory), environment.get("PYTHONPATH", "")])
        environment["PYTHONUNBUFFERED"] = "1"
        environment.pop("LOG_LEVEL", None)
        if storage:
            environment.update(self.env)
        environment.update(env or {})
        command = list(args)
        if storage and self.args:
            # Storage options go right after the app (`run APP ...`, `tasks APP ...`).
            command[2:2] = self.args
        return subprocess.run(
            [sys.executable, "-m", "pyncette", *command],
            cwd=self.directory,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _redis_url() -> str:
    parts = urlsplit(REDIS_URL)
    host, port = parts.hostname or "localhost", parts.port or 6379
    try:
        with socket.create_connection((host, port), timeout=3):
            return REDIS_URL
    except OSError as exc:
        reason = f"Redis at {host}:{port} is unreachable: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "cliapp.py").write_text(APP_MODULE)
    return tmp_path


@pytest.fixture(params=["sqlite", "redis"])
def cli(request: pytest.FixtureRequest, app_dir: Path) -> Iterator[Cli]:
    """The CLI against a SQLite file (configured from the environment) or Redis (from the command line)."""
    if request.param == "sqlite":
        yield Cli(app_dir, env={"PYNCETTE_SQLITE_DATABASE": str(app_dir / "tasks.db")})
        return
    options = {"redis_url": _redis_url(), "redis_namespace": f"cli_test_{uuid.uuid4().hex[:10]}"}
    yield Cli(app_dir, args=["--backend", "redis", *(f"-o{k}={v}" for k, v in options.items())])
    redis = backends.load("redis")
    anyio.run(redis.purge, redis.settings(options))


@pytest.fixture
def sqlite_cli(app_dir: Path) -> Cli:
    return Cli(app_dir, env={"PYNCETTE_SQLITE_DATABASE": str(app_dir / "tasks.db")})


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pyncette: error: "), result.stderr
    return lines[0]


# -- run ----------------------------------------------------------------------------------------


def test_run_stops_after_seconds(cli: Cli) -> None:
    result = cli("run", "cliapp:app", "--seconds", "1")
    assert result.returncode == 0, result.stderr
    assert "tick ran" in result.stdout
    assert "Running cliapp:app on backend" in result.stdout
    assert "Pyncette stopped" in result.stdout


def test_run_log_level_and_file_path(sqlite_cli: Cli) -> None:
    result = sqlite_cli("run", "cliapp.py:app", "--seconds", "0.5", "--log-level", "warning")
    assert result.returncode == 0, result.stderr
    assert "tick ran" in result.stdout
    assert "Pyncette stopped" not in result.stdout  # INFO is below the chosen level


def test_run_stops_gracefully_on_sigint(app_dir: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PYNCETTE_")}
    environment.update(PYTHONPATH=str(app_dir), PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "pyncette", "run", "cliapp:app"],
        cwd=app_dir,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:  # wait until the app is running
            if "tick ran" in line:
                break
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    assert "SIGINT received: shutting down gracefully" in output
    assert "Pyncette stopped" in output


# -- tasks --------------------------------------------------------------------------------------


def test_tasks_schedule_list_show_unschedule(cli: Cli) -> None:
    result = cli(
        "tasks", "cliapp:app", "schedule", "reminder", "alice", "--interval", "3600", "--arg", "user=alice", "--json"
    )
    assert result.returncode == 0, result.stderr
    alice = json.loads(result.stdout)
    assert alice["instance"] == "alice"
    assert alice["interval"] == 3600
    assert alice["args"] == {"user": "alice"}

    result = cli(
        "tasks", "cliapp:app", "schedule", "reminder", "bob", "--cron", "0 9 * * *", "--timezone", "Europe/Dublin"
    )
    assert result.returncode == 0, result.stderr
    assert "scheduled reminder/bob" in result.stdout

    result = cli("tasks", "cliapp:app", "list", "reminder", "--json")
    assert result.returncode == 0, result.stderr
    listed = {item["instance"]: item for item in json.loads(result.stdout)}
    assert set(listed) == {"alice", "bob"}
    assert listed["bob"]["cron"] == "0 9 * * *"
    assert listed["bob"]["timezone"] == "Europe/Dublin"

    result = cli("tasks", "cliapp:app", "list", "reminder")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split()[:3] == ["INSTANCE", "NEXT", "RUN"]
    assert "2 instance(s)" in result.stdout

    result = cli("tasks", "cliapp:app", "show", "reminder", "alice", "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["scheduled_at"] == alice["scheduled_at"]
    assert shown["locked_until"] is None
    assert (shown["attempt"], shown["last_outcome"], shown["last_error"], shown["policies"]) == (1, None, None, {})

    result = cli("tasks", "cliapp:app", "show", "reminder", "alice")
    assert result.returncode == 0, result.stderr
    fields = dict(line.rsplit(None, 1) for line in result.stdout.splitlines() if line.startswith(("attempt", "last")))
    assert {name.strip(): value for name, value in fields.items()} == {
        "attempt": "1",
        "last run": "-",
        "last error": "-",
    }

    result = cli("tasks", "cliapp:app", "describe", "reminder", "bob", "--next", "3", "--json")
    assert result.returncode == 0, result.stderr
    described = json.loads(result.stdout)
    assert [t[11:16] for t in described["next_runs"]] == ["09:00"] * 3 and described["instance"] == "bob"
    result = cli("tasks", "cliapp:app", "describe", "reminder", "bob")
    assert result.returncode == 0, result.stderr
    assert sum("T09:00:00+" in line for line in result.stdout.splitlines()) >= 6  # next run + 5 next runs
    assert cli("tasks", "cliapp:app", "describe", "reminder", "bob", "--next", "0").returncode == 2

    result = cli("tasks", "cliapp:app", "unschedule", "reminder", "alice", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"template": "reminder", "instance": "alice", "unscheduled": True}

    result = cli("tasks", "cliapp:app", "show", "reminder", "alice")
    assert result.returncode == 1
    assert "no instance 'alice' of 'reminder'" in _one_line_error(result)

    result = cli("tasks", "cliapp:app", "--json", "list", "reminder")
    assert [item["instance"] for item in json.loads(result.stdout)] == ["bob"]


def test_instance_scheduled_by_the_cli_runs(cli: Cli) -> None:
    past = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    result = cli("tasks", "cliapp:app", "schedule", "reminder", "once", "--at", past, "--arg", "user=carol")
    assert result.returncode == 0, result.stderr

    result = cli("run", "cliapp:app", "--seconds", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("reminder once for carol") == 1

    # A once-off instance is removed after it ran.
    result = cli("tasks", "cliapp:app", "list", "reminder", "--json")
    assert json.loads(result.stdout) == []


def test_schedule_running_instance_needs_force(sqlite_cli: Cli, app_dir: Path) -> None:
    result = sqlite_cli("tasks", "cliapp:app", "schedule", "reminder", "busy", "--interval", "60")
    assert result.returncode == 0, result.stderr

    async def lock() -> None:
        from pyncette.sqlite import backend

        now = datetime.now(timezone.utc)
        async with backend(sqlite_database=str(app_dir / "tasks.db")) as repository:
            claimed = await repository.claim(
                "reminder", now=now + timedelta(minutes=2), limit=1, lease_until=now + timedelta(hours=1), token="x"
            )
            assert len(claimed) == 1

    anyio.run(lock)
    result = sqlite_cli("tasks", "cliapp:app", "schedule", "reminder", "busy", "--interval", "30")
    assert result.returncode == 1
    assert "is running; pass --force" in _one_line_error(result)

    result = sqlite_cli("tasks", "cliapp:app", "schedule", "reminder", "busy", "--interval", "30", "--force", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["locked_by"] is None


def test_command_line_options_win_over_environment(sqlite_cli: Cli, app_dir: Path) -> None:
    chosen = app_dir / "chosen.db"
    result = sqlite_cli(
        "tasks", "cliapp:app", "-o", f"sqlite_database={chosen}", "schedule", "reminder", "x", "--interval", "5"
    )
    assert result.returncode == 0, result.stderr
    assert chosen.exists()
    assert not (app_dir / "tasks.db").exists()


# -- backends -----------------------------------------------------------------------------------


def test_backends_lists_installed_and_broken(app_dir: Path) -> None:
    # A distribution whose backend plugin cannot be imported.
    info = app_dir / "pyncette_broken_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pyncette-broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[pyncette.backends]\nbroken = no_such_module_anywhere:backend\n")
    cli = Cli(app_dir)

    result = cli("backends", "--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    names = {b["name"]: b for b in listing["backends"]}
    assert names["sqlite"]["package"] == "pyncette"
    assert set(names["sqlite"]["capabilities"]) >= {"persistent", "coordinated"}
    options = {o["name"]: o for o in names["sqlite"]["options"]}
    assert options["sqlite_timeout"] == {
        "name": "sqlite_timeout",
        "type": "seconds",
        "default": 30.0,
        "required": False,
        "secret": False,
        "isolates": False,
        "help": "seconds to wait for another process's write lock",
    }
    assert options["sqlite_table_name"]["isolates"] is True
    [broken] = listing["broken"]
    assert broken["name"] == "broken"
    assert broken["package"] == "pyncette-broken-plugin"
    assert "no_such_module_anywhere" in broken["error"]

    result = cli("backends")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:4] == ["NAME", "PACKAGE", "VERSION", "CAPABILITIES"]
    assert "Broken plugins:" in result.stdout
    assert "sqlite options (also settable as PYNCETTE_<NAME IN CAPITALS>):" in result.stdout
    assert any(line.split()[:3] == ["sqlite_timeout", "seconds", "30.0"] for line in result.stdout.splitlines())
    assert result.stderr == ""


# -- errors -------------------------------------------------------------------------------------

#: A password given in a URL's query string: it must never be shown.
SECRET = "password=S3cret-in-the-query"

ERRORS = [
    pytest.param(["tasks", "nosuchmodule:app", "list", "reminder"], 2, "cannot import 'nosuchmodule'", id="module"),
    pytest.param(["run", "cliapp:missing"], 2, "has no attribute 'missing'", id="attribute"),
    pytest.param(["run", "cliapp:not_an_app"], 2, "not a pyncette.Pyncette app", id="not-an-app"),
    pytest.param(["run", "nosuchfile.py:app"], 2, "no such file", id="file"),
    pytest.param(["run", "cliapp:app", "--backend", "nope"], 2, "unknown backend 'nope'", id="backend"),
    pytest.param(["tasks", "cliapp:app", "list", "nope"], 2, "unknown template 'nope'", id="template"),
    pytest.param(["tasks", "cliapp:app", "list", "tick"], 2, "'tick' is a static task", id="static"),
    pytest.param(["run", "cliapp:app", "-o", "colour=blue"], 2, "unknown option(s) colour", id="option"),
    pytest.param(["run", "cliapp:app", "-o", "novalue"], 2, "expected KEY=VALUE", id="assignment"),
    pytest.param(
        ["tasks", "cliapp:app", "-o", "sqlite_table_name=bad-name", "list", "reminder"],
        2,
        "invalid sqlite_table_name",
        id="configuration",
    ),
    pytest.param(
        ["tasks", "cliapp:app", "schedule", "reminder", "x", "--cron", "not a cron"],
        2,
        "invalid cron expression",
        id="cron",
    ),
    pytest.param(["tasks", "cliapp:app", "schedule", "reminder", "x"], 2, "exactly one of", id="no-schedule"),
    pytest.param(["tasks", "cliapp:app", "schedule", "reminder", "x", "--at", "soon"], 2, "invalid --at", id="at"),
    pytest.param(["run", "cliapp:app", "--log-level", "loud"], 2, "invalid log level", id="log-level"),
    pytest.param(
        ["run", "cliapp:app", "--backend", "redis", "-o", "redis_url=redis://127.0.0.1:1/0"],
        1,
        "storage error: cannot connect to Redis",
        id="unreachable-run",
    ),
    pytest.param(
        ["tasks", "cliapp:app", "--backend", "redis", "-o", "redis_url=redis://127.0.0.1:1/0", "list", "reminder"],
        1,
        "storage error: cannot connect to Redis",
        id="unreachable-tasks",
    ),
    pytest.param(["tasks", "cliapp:app", "unschedule", "reminder", "ghost"], 1, "no instance 'ghost'", id="missing"),
    pytest.param(
        ["run", "cliapp:app", "--backend", "postgres", "-o", f"postgres_url=postgresql://u@127.0.0.1:1/db?{SECRET}"],
        1,
        "storage error: ",
        id="secret-in-query",
    ),
    pytest.param(
        ["run", "cliapp:app", "--backend", "postgres", "-o", f"postgres_url=postgresql://u@host:nope/db?{SECRET}"],
        2,
        "invalid postgres_url",
        id="secret-with-bad-port",
    ),
]


@pytest.mark.parametrize(("args", "code", "message"), ERRORS)
def test_errors_are_one_line_with_exit_status(sqlite_cli: Cli, args: list[str], code: int, message: str) -> None:
    result = sqlite_cli(*args)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert message in _one_line_error(result)
    assert "Traceback" not in result.stderr
    assert "S3cret" not in result.stdout + result.stderr


def test_backend_from_environment(app_dir: Path) -> None:
    result = Cli(app_dir)("run", "cliapp:app", env={"PYNCETTE_BACKEND": "nope"})
    assert result.returncode == 2
    assert "unknown backend 'nope'" in _one_line_error(result)


def test_usage_errors_exit_2(app_dir: Path) -> None:
    result = Cli(app_dir)("tasks", "cliapp:app")
    assert result.returncode == 2
    assert "required: ACTION" in result.stderr
    assert Cli(app_dir)().returncode == 2


# -- in process: help and value conversion ------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["run"],
        ["backends"],
        ["tasks"],
        ["tasks", "m:app", "list"],
        ["tasks", "m:app", "show"],
        ["tasks", "m:app", "schedule"],
        ["tasks", "m:app", "unschedule"],
    ],
)
def test_help_on_every_command(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: pyncette" in capsys.readouterr().out


def test_parser_accepts_shared_options_before_or_after_the_action() -> None:
    parser = build_parser()
    before = parser.parse_args(["tasks", "m:app", "--json", "--backend", "redis", "list", "t"])
    after = parser.parse_args(["tasks", "m:app", "list", "t", "--json", "--backend", "redis"])
    assert before.json and after.json
    assert before.backend == after.backend == "redis"


def test_options_are_converted_by_the_backend_schema(app_dir: Path) -> None:
    app = load_app(str(app_dir / "cliapp.py") + ":app")
    env = {"PYNCETTE_SQLITE_TIMEOUT": "2.5", "PYNCETTE_REDIS_URL": "redis://ignored", "HOME": "/"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        assert configure_app(app, "sqlite", ["sqlite_table_name=other"]) == "sqlite"
    settings = backends.load("sqlite").settings(app.backend_options)
    assert settings["sqlite_timeout"] == 2.5
    assert settings["sqlite_table_name"] == "other"
    assert "redis_url" not in app.backend_options  # only the chosen backend's variables are read
    with pytest.raises(ConfigurationError, match=r"invalid sqlite_timeout 'soon': expected a number of seconds"):
        configure_app(app, "sqlite", ["sqlite_timeout=soon"])


PRUNED_APP = """\
from datetime import timedelta

from pyncette import Context, Pyncette

app = Pyncette(poll_interval=timedelta(milliseconds=100))


@app.task(interval=timedelta(milliseconds=300))
async def tick(context: Context) -> None:
    print("tick ran", flush=True)
"""


def test_pause_resume_run_now_and_prune(cli: Cli, app_dir: Path) -> None:
    at = "2099-01-01T09:00:00+00:00"
    assert cli("tasks", "cliapp:app", "schedule", "reminder", "bob", "--at", at, "--arg", "user=bob").returncode == 0

    # A paused static task runs in no process; resuming lets it run again.
    result = cli("tasks", "cliapp:app", "pause", "tick", "--note", "db maintenance", "--by", "ops")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("paused tick")
    result = cli("run", "cliapp:app", "--seconds", "1")
    assert result.returncode == 0, result.stderr
    assert "tick ran" not in result.stdout
    result = cli("tasks", "cliapp:app", "describe", "tick", "--json")
    paused = json.loads(result.stdout)["paused"]
    assert (paused["scope"], paused["note"], paused["by"]) == ("task", "db maintenance", "ops")
    assert "db maintenance" in cli("tasks", "cliapp:app", "describe", "tick").stdout
    assert cli("tasks", "cliapp:app", "resume", "tick").returncode == 0
    result = cli("tasks", "cliapp:app", "resume", "tick")
    assert result.returncode == 1 and "tick was not paused" in _one_line_error(result)

    # An instance: paused, listed, resumed; then one run now, which keeps its schedule.
    result = cli("tasks", "cliapp:app", "pause", "reminder", "bob", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["records"] in (1, None)
    result = cli("tasks", "cliapp:app", "pauses", "reminder", "--json")
    assert [(p["scope"], p["match"]) for p in json.loads(result.stdout)] == [("instance", "bob")]
    assert json.loads(result.stdout)[0]["by"]  # user@host by default
    assert cli("tasks", "cliapp:app", "resume", "reminder", "bob").returncode == 0
    result = cli("tasks", "cliapp:app", "run", "reminder", "bob", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["result"] == "queued"
    result = cli("run", "cliapp:app", "--seconds", "1")
    assert "reminder bob for bob" in result.stdout
    described = json.loads(cli("tasks", "cliapp:app", "describe", "reminder", "bob", "--json").stdout)
    assert described["next_runs"] == [at] and described["last_outcome"] == "succeeded"

    # Usage errors exit with 2 before touching storage.
    for args in (["pause", "reminder", "bob", "--prefix", "b"], ["run", "reminder"], ["pause", "tick", "x"]):
        result = cli("tasks", "cliapp:app", *args)
        assert result.returncode == 2, (args, result.stderr)
    assert cli("tasks", "cliapp:app", "pause", "nope").returncode == 2

    # The same storage seen by a version of the app without the template: its records are orphans.
    (app_dir / "cliapp_next.py").write_text(PRUNED_APP)
    result = cli("tasks", "cliapp_next:app", "prune", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"parent": "reminder", "records": 1, "deleted": False}]
    result = cli("tasks", "cliapp_next:app", "prune", "--delete")
    assert result.returncode == 0, result.stderr
    assert "deleted 1 record(s) of 1 task(s)" in result.stdout
    assert json.loads(cli("tasks", "cliapp_next:app", "prune", "--json").stdout) == []
    assert cli("tasks", "cliapp:app", "show", "reminder", "bob").returncode == 1
