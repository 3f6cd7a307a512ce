"""The dashboard's JSON API on the memory backend: auth, cross-site checks, read-only mode, paging,
secret redaction and errors (no browser, no server: httpx talks to the ASGI app directly)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

from pyncette import Context, Pyncette, PyncetteContext
from pyncette.abc import Record, RegisterMode
from pyncette.errors import ConfigurationError
from pyncette.runstate import RunState
from pyncette_dashboard import CSRF_HEADER, TOKEN_HEADER, cron_words, dashboard, duration_words, parse_bind
from pyncette_dashboard._data import backend_info

pytestmark = pytest.mark.anyio

TOKEN = "correct-horse-battery-staple-42"
ORIGIN = "http://testserver"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_app() -> Pyncette:
    app = Pyncette()

    @app.task(schedule="*/5 * * * *", timezone="Europe/Dublin", history=3)
    async def report(context: Context) -> None: ...

    @app.dynamic_task(schedule="0 9 * * mon-fri", timezone="America/New_York")
    async def remind(context: Context) -> None: ...

    @app.partitioned_task(partition_count=4, interval=timedelta(hours=1))
    async def sync(context: Context) -> None: ...

    return app


@pytest.fixture
async def ctx() -> AsyncIterator[PyncetteContext]:
    app = make_app()
    async with app.create() as context:
        await context.repository.register(
            [Record("report/static", "report", None, datetime.now(timezone.utc) + timedelta(minutes=5))],
            now=datetime.now(timezone.utc),
            mode=RegisterMode.CREATE,
        )
        yield context


def client(board: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=board), base_url=ORIGIN)


def template(ctx: PyncetteContext, name: str) -> Any:
    return next(t for t in ctx.app.tasks if t.name == name)


def action_headers(**extra: str) -> dict[str, str]:
    return {TOKEN_HEADER: TOKEN, "Origin": ORIGIN, "Sec-Fetch-Site": "same-origin", **extra}


async def test_overview_lists_tasks_with_schedule_in_words(ctx: PyncetteContext) -> None:
    await ctx.schedule_task(template(ctx, "remind"), "alice")
    async with client(dashboard(ctx)) as http:
        body = (await http.get("/api/overview")).json()
    tasks = {t["name"]: t for t in body["tasks"]}
    assert set(tasks) == {"report", "remind", "sync"}
    report = tasks["report"]
    assert report["schedule"]["words"] == "every 5 minutes"
    assert report["schedule"]["cron"] == "*/5 * * * *"
    assert report["timezone"] == "Europe/Dublin"
    assert report["state"]["next_run"]["local"].endswith(("+00:00", "+01:00"))
    assert report["paused"] is None
    assert tasks["remind"]["timezone"] == "America/New_York"
    assert tasks["remind"]["instances"] == {
        "scanned": 1,
        "complete": True,
        "failing": 0,
        "late": 0,
        "undecodable": 0,
        "soonest": tasks["remind"]["instances"]["soonest"],
    }
    assert tasks["remind"]["instances"]["soonest"]["local"].endswith(("-05:00", "-04:00"))
    assert body["actions"] is None


async def test_page_is_served_with_its_base_when_mounted(ctx: PyncetteContext) -> None:
    host = Starlette(routes=[Mount("/pyncette", dashboard(ctx))])
    async with client(host) as http:
        page = await http.get("/pyncette/")
        script = await http.get("/pyncette/static/app.js")
        api = await http.get("/pyncette/api/overview")
    assert page.status_code == 200 and '<base href="/pyncette/">' in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert script.status_code == 200 and "fetch(" in script.text
    assert api.status_code == 200


async def test_read_only_by_default(ctx: PyncetteContext) -> None:
    async with client(dashboard(ctx)) as http:
        response = await http.post("/api/tasks/report/pause", json={}, headers=action_headers())
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "read_only"
    assert await ctx.list_pauses(template(ctx, "report")) == []


async def test_actions_need_a_token_or_a_hook(ctx: PyncetteContext) -> None:
    with pytest.raises(ConfigurationError, match="token"):
        dashboard(ctx, actions=True)
    with pytest.raises(ConfigurationError, match="at least 16"):
        dashboard(ctx, actions=True, token="short")


async def test_token_refused_then_accepted(ctx: PyncetteContext, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pyncette.dashboard")
    board = dashboard(ctx, actions=True, token=TOKEN)
    async with client(board) as http:
        missing = await http.post("/api/tasks/report/pause", json={}, headers={"Origin": ORIGIN})
        wrong = await http.post("/api/tasks/report/pause", json={}, headers=action_headers(**{TOKEN_HEADER: "x" * 20}))
        assert await ctx.list_pauses(template(ctx, "report")) == []
        right = await http.post("/api/tasks/report/pause", json={"note": "ledger migration"}, headers=action_headers())
    assert (missing.status_code, missing.json()["error"]["code"]) == (401, "token_missing")
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (403, "token_wrong")
    assert right.status_code == 200, right.text
    [pause] = await ctx.list_pauses(template(ctx, "report"))
    assert pause.note == "ledger migration"
    assert pause.by is not None and "token holder" in pause.by
    messages = [r.getMessage() for r in caplog.records if r.name == "pyncette.dashboard"]
    assert any("Refused pause" in m for m in messages)
    assert any("action pause on report by token holder" in m for m in messages)
    assert not any(TOKEN in m for m in messages)


async def test_cross_site_requests_are_refused(ctx: PyncetteContext) -> None:
    board = dashboard(ctx, actions=True, token=TOKEN, allowed_origins=["https://ops.example.com"])
    async with client(board) as http:
        foreign = await http.post(
            "/api/tasks/report/run", json={}, headers=action_headers(Origin="https://evil.example")
        )
        site = await http.post(
            "/api/tasks/report/run", json={}, headers=action_headers(**{"Sec-Fetch-Site": "cross-site"})
        )
        form = await http.post(
            "/api/tasks/report/run",
            content="a=1",
            headers={**action_headers(), "Content-Type": "application/x-www-form-urlencoded"},
        )
        preflight = await http.options("/api/tasks/report/run", headers={"Origin": "https://evil.example"})
        allowed = await http.post(
            "/api/tasks/report/run", json={}, headers=action_headers(Origin="https://ops.example.com")
        )
    assert (foreign.status_code, foreign.json()["error"]["code"]) == (403, "cross_origin")
    assert (site.status_code, site.json()["error"]["code"]) == (403, "cross_site")
    assert (form.status_code, form.json()["error"]["code"]) == (415, "not_json")
    assert preflight.status_code == 405
    assert "access-control-allow-origin" not in preflight.headers
    assert allowed.status_code == 200 and allowed.json()["result"] == "queued"


async def test_auth_hook(ctx: PyncetteContext) -> None:
    async def who(request: Request) -> str | None:
        return request.headers.get("X-Test-User")

    board = dashboard(ctx, actions=True, auth=who)
    async with client(board) as http:
        anonymous = await http.get("/api/overview")
        signed = await http.get("/api/overview", headers={"X-Test-User": "alice"})
        no_header = await http.post("/api/tasks/report/pause", json={}, headers={"X-Test-User": "alice"})
        nobody = await http.post("/api/tasks/report/pause", json={}, headers={CSRF_HEADER: "1"})
        done = await http.post(
            "/api/tasks/report/pause", json={"note": "hook"}, headers={"X-Test-User": "alice", CSRF_HEADER: "1"}
        )
    assert anonymous.status_code == 401
    assert signed.status_code == 200 and signed.json()["actions"] == "hook"
    assert (no_header.status_code, no_header.json()["error"]["code"]) == (403, "csrf")
    assert nobody.status_code == 401
    assert done.status_code == 200
    [pause] = await ctx.list_pauses(template(ctx, "report"))
    assert pause.by is not None and pause.by.startswith("alice")


async def test_keyset_paging_sees_every_instance_once(ctx: PyncetteContext) -> None:
    for name, count in (("remind", 130), ("sync", 70)):
        await ctx.schedule_tasks(template(ctx, name), {f"i{n:04d}": {} for n in range(count)})
        seen: list[str] = []
        token = None
        pages = 0
        async with client(dashboard(ctx, page_size=50)) as http:
            while True:
                query = {"limit": "50", **({"continuation": token} if token else {})}
                body = (await http.get(f"/api/tasks/{name}/instances", params=query)).json()
                assert len(body["items"]) <= 50
                seen.extend(item["instance"] for item in body["items"])
                pages += 1
                token = body["continuation"]
                if token is None:
                    break
        assert sorted(seen) == [f"i{n:04d}" for n in range(count)], name
        assert pages >= 2


async def test_paging_errors_name_the_bad_value(ctx: PyncetteContext) -> None:
    async with client(dashboard(ctx)) as http:
        garbage = await http.get("/api/tasks/remind/instances", params={"continuation": "not-a-token!"})
        first = (await http.get("/api/tasks/sync/instances", params={"limit": "1"})).json()
        other = await http.get("/api/tasks/remind/instances", params={"continuation": "WyJwYWdlIiwic3luYyIsMCxudWxsXQ"})
        limit = await http.get("/api/tasks/remind/instances", params={"limit": "0"})
        static = await http.get("/api/tasks/report/instances")
    assert garbage.status_code == 400
    assert garbage.json()["error"]["parameter"] == "continuation"
    assert "not-a-token!" in garbage.json()["error"]["message"]
    assert first["continuation"] is None  # sync has no instances yet
    assert other.status_code == 400 and "remind" in other.json()["error"]["message"]
    assert limit.status_code == 400 and limit.json()["error"]["parameter"] == "limit"
    assert static.status_code == 400 and "static" in static.json()["error"]["message"]


async def test_errors_are_4xx_json_naming_the_value(ctx: PyncetteContext) -> None:
    await ctx.schedule_task(template(ctx, "remind"), "alice")
    board = dashboard(ctx, actions=True, token=TOKEN)
    async with client(board) as http:
        unknown = await http.get("/api/tasks/nope")
        note = await http.post("/api/tasks/report/pause", json={"note": "x" * 501}, headers=action_headers())
        missing = await http.get("/api/tasks/remind/instance", params={"name": "bob"})
        template_run = await http.post("/api/tasks/remind/run", json={}, headers=action_headers())
        gone = await http.post("/api/tasks/remind/unschedule", json={"instance": "bob"}, headers=action_headers())
        field = await http.post("/api/tasks/remind/run", json={"instance": "alice", "x": 1}, headers=action_headers())
        not_json = await http.post(
            "/api/tasks/report/pause", content="{", headers=action_headers(**{"Content-Type": "application/json"})
        )
        resume = await http.post("/api/tasks/report/resume", json={}, headers=action_headers())
        bad_next = await http.get("/api/tasks/report", params={"next": "1000"})
    assert unknown.status_code == 404 and unknown.json()["error"]["value"] == "nope"
    assert note.status_code == 422 and note.json()["error"]["parameter"] == "note"
    assert "at most 500" in note.json()["error"]["message"]
    assert missing.status_code == 404 and "'bob'" in missing.json()["error"]["message"]
    assert template_run.status_code == 422 and template_run.json()["error"]["parameter"] == "instance"
    assert gone.status_code == 404
    assert field.status_code == 422 and field.json()["error"]["value"] == "x"
    assert not_json.status_code == 400
    assert resume.status_code == 409
    assert bad_next.status_code == 400 and bad_next.json()["error"]["parameter"] == "next"


async def test_instance_actions(ctx: PyncetteContext) -> None:
    remind = template(ctx, "remind")
    await ctx.schedule_task(remind, "alice")
    board = dashboard(ctx, actions=True, token=TOKEN)
    async with client(board) as http:
        paused = await http.post("/api/tasks/remind/pause", json={"instance": "alice"}, headers=action_headers())
        page = (await http.get("/api/tasks/remind")).json()
        detail = (await http.get("/api/tasks/remind/instance", params={"name": "alice", "next": "3"})).json()
        resumed = await http.post("/api/tasks/remind/resume", json={"instance": "alice"}, headers=action_headers())
        ran = await http.post("/api/tasks/remind/run", json={"instance": "alice"}, headers=action_headers())
        gone = await http.post("/api/tasks/remind/unschedule", json={"instance": "alice"}, headers=action_headers())
    assert paused.status_code == 200 and paused.json()["records"] == 1
    assert page["instances"]["items"][0]["paused"] is True
    assert detail["instance"]["paused"]["scope"] == "instance"
    assert len(detail["instance"]["next_runs"]) == 3
    assert detail["instance"]["next_runs"][0]["local"].endswith(("-05:00", "-04:00"))
    assert resumed.status_code == 200 and ran.json()["result"] == "queued"
    assert gone.status_code == 200 and await ctx.get_task(remind, "alice") is None


async def test_secrets_are_never_rendered(ctx: PyncetteContext) -> None:
    remind = template(ctx, "remind")
    await ctx.schedule_task(remind, "alice", password="hunter2-secret", url="redis://u:topsecretpw@db:6379/0")
    parent, _ = remind.instance_key("alice")
    record = await ctx.repository.get(parent, "alice")
    assert record is not None
    state = RunState(last_outcome="failed", last_error="ConnectionError: postgres://app:topsecretpw@db/x refused")
    await ctx.repository.register(
        [Record(parent, "alice", record.spec, record.scheduled_at, state=state.encode())],
        now=datetime.now(timezone.utc),
        mode=RegisterMode.FORCE,
    )
    async with client(dashboard(ctx)) as http:
        texts = [
            (await http.get("/api/tasks/remind")).text,
            (await http.get("/api/tasks/remind/instance", params={"name": "alice"})).text,
            (await http.get("/api/problems")).text,
        ]
    for text in texts:
        assert "hunter2-secret" not in text and "topsecretpw" not in text
    assert "***" in texts[1] and "ConnectionError" in texts[1]
    app = Pyncette(backend="redis", redis_url="redis://user:s3cret-pass@127.0.0.1:1/0")
    shown = backend_info(SimpleNamespace(app=app))  # type: ignore[arg-type]
    assert shown["name"] == "redis" and "s3cret-pass" not in str(shown) and "***" in shown["options"]["redis_url"]


async def test_problems_view_scans_in_bounded_slices(ctx: PyncetteContext) -> None:
    remind = template(ctx, "remind")
    await ctx.schedule_tasks(remind, {f"ok{n:03d}": {} for n in range(40)})
    now = datetime.now(timezone.utc)
    spec = remind.instantiate("x").to_spec()
    failed = RunState(last_outcome="failed", last_error="ValueError: boom").encode()
    retrying = RunState(failures=1, last_outcome="failed", last_error="ValueError: again").encode()
    await ctx.repository.register(
        [
            Record("remind", "zz-failed", spec, now + timedelta(hours=1), state=failed),
            Record("remind", "zz-retrying", spec, now + timedelta(hours=1), state=retrying),
            Record("remind", "zz-stuck", spec, now - timedelta(minutes=5)),
            Record("remind", "zz-late", spec, now - timedelta(minutes=5)),
            Record("remind", "zz-bad", spec, now + timedelta(hours=1)),
        ],
        now=now,
        mode=RegisterMode.FORCE,
    )
    await ctx.repository.claim(
        "remind", now=now - timedelta(minutes=4), limit=1, lease_until=now - timedelta(minutes=3), token="gone"
    )
    await ctx.repository.write_raw_spec("remind", "zz-bad", "{not json")
    found: dict[str, list[str]] = {}
    requests = 0
    token = None
    async with client(dashboard(ctx, scan_limit=10)) as http:
        while True:
            body = (await http.get("/api/problems", params={"continuation": token} if token else {})).json()
            requests += 1
            assert body["scanned"] <= 10
            found.update({item.get("instance") or item["task"]: item["problems"] for item in body["items"]})
            token = body["continuation"]
            if body["complete"]:
                break
    assert requests >= 4
    assert found["zz-failed"] == ["failed"]
    assert found["zz-retrying"] == ["retrying"]
    assert "stuck" in found[next(n for n in ("zz-stuck", "zz-late") if "stuck" in found.get(n, []))]
    assert found["zz-bad"] == ["undecodable"]
    assert any(kinds == ["late"] for kinds in found.values())
    assert not any(name.startswith("ok") for name in found)


def test_words() -> None:
    assert cron_words("* * * * *") == "every minute"
    assert cron_words("* * * * * */10") == "every 10 seconds"
    assert cron_words("*/15 * * * *") == "every 15 minutes"
    assert cron_words("0 9 * * *") == "every day at 09:00"
    assert cron_words("30 9 * * mon-fri") == "every Monday to Friday at 09:30"
    assert cron_words("0 0 1 * *") == "on day 1 of every month at 00:00"
    assert cron_words("0 0 1 1 *") == "every year on January 1 at 00:00"
    assert cron_words("1-5 */3 * * *") == "cron schedule"
    assert duration_words(timedelta(hours=1, minutes=30)) == "1 hour 30 minutes"
    assert parse_bind(None) == ("127.0.0.1", 8765)
    assert parse_bind(":9000") == ("127.0.0.1", 9000)
    assert parse_bind("[::1]:9000") == ("::1", 9000)
    with pytest.raises(ConfigurationError, match="bind"):
        parse_bind("host:port")


async def test_prefix_pause_and_resume(ctx: PyncetteContext) -> None:
    remind = template(ctx, "remind")
    await ctx.schedule_tasks(remind, {"eu-1": {}, "eu-2": {}, "us-1": {}})
    async with client(dashboard(ctx, actions=True, token=TOKEN)) as http:
        paused = await http.post(
            "/api/tasks/remind/pause", json={"prefix": "eu-", "note": "relay"}, headers=action_headers()
        )
        page = (await http.get("/api/tasks/remind")).json()
        both = await http.post(
            "/api/tasks/remind/pause", json={"prefix": "eu-", "instance": "eu-1"}, headers=action_headers()
        )
        resumed = await http.post("/api/tasks/remind/resume", json={"prefix": "eu-"}, headers=action_headers())
    assert paused.status_code == 200 and paused.json()["records"] == 2
    assert {i["instance"]: i["paused_by"] for i in page["instances"]["items"]} == {
        "eu-1": "prefix",
        "eu-2": "prefix",
        "us-1": None,
    }
    assert {i["instance"]: i["paused"] for i in page["instances"]["items"]} == {
        "eu-1": True,
        "eu-2": True,
        "us-1": False,
    }
    assert [(p["scope"], p["match"], p["note"]) for p in page["pauses"]] == [("prefix", "eu-", "relay")]
    assert both.status_code == 422
    assert resumed.status_code == 200 and await ctx.list_pauses(remind) == []


async def test_an_app_is_opened_on_the_first_request(tmp_path: Any) -> None:
    app = make_app()
    app.configure(backend="sqlite", sqlite_database=str(tmp_path / "tasks.db"))
    board = dashboard(app)
    async with client(board) as http:
        first = await http.get("/api/overview")
        second = await http.get("/api/tasks/remind/instances")
    assert first.status_code == 200 and first.json()["backend"]["name"] == "sqlite"
    assert second.status_code == 200 and second.json()["items"] == []
    async with board.lifespan() as ctx:  # already open: the same context
        assert ctx is await board.context()
    await board.aclose()
    async with client(board) as http:  # opened again when needed
        assert (await http.get("/api/overview")).status_code == 200
    await board.aclose()
