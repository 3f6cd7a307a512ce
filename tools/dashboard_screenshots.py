"""Take the dashboard screenshots of the documentation (docs/img/dashboard-*.png) from the real UI.

A small demo app runs for a few seconds on a temporary SQLite file (real runs, a failing task retrying, a
paused task, a prefix of paused instances, a record that cannot be decoded); its dashboard is served by
uvicorn on a loopback port and headless Chromium (Debian's ``chromium``) takes the pictures through
Playwright. Needs ``pyncette``, ``pyncette-dashboard`` and ``playwright`` (Python) installed::

    python tools/dashboard_screenshots.py            # writes docs/img/dashboard-*.png
    python tools/dashboard_screenshots.py --out /tmp/shots --chromium /usr/bin/chromium
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio

from pyncette import Context, Pyncette, PyncetteContext, Retry
from pyncette_dashboard import bind, dashboard, serve_alongside

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "screenshot-token-not-a-secret"  # noqa: S105 - a throw-away demo


def demo_app(database: Path) -> tuple[Pyncette, dict[str, Any]]:
    app = Pyncette(sqlite_database=str(database), poll_interval=timedelta(milliseconds=200))

    @app.task(schedule="0 3 * * *", timezone="Europe/Dublin", history=5)
    async def nightly_report(context: Context) -> None:
        await anyio.sleep(0.05)

    @app.task(schedule="* * * * * */2", retry=Retry(attempts=5, backoff=timedelta(seconds=30)))
    async def sync_prices(context: Context) -> None:
        raise ConnectionError("price feed https://feed.example/prices?api_key=abc123 unreachable")

    @app.task(interval=timedelta(minutes=5))
    async def refresh_cache(context: Context) -> None:
        pass

    @app.dynamic_task(schedule="0 9 * * mon-fri", timezone="America/New_York")
    async def remind(context: Context) -> None:
        pass

    @app.partitioned_task(partition_count=4, interval=timedelta(hours=1))
    async def sync_account(context: Context) -> None:
        pass

    return app, {"nightly_report": nightly_report, "remind": remind, "sync_account": sync_account,
                 "refresh_cache": refresh_cache}  # fmt: skip


async def populate(ctx: PyncetteContext, tasks: dict[str, Any]) -> None:
    remind, sync_account = tasks["remind"], tasks["sync_account"]
    people = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
    await ctx.schedule_tasks(remind, {f"{region}-{name}": {"user": name} for region in ("eu", "us") for name in people})
    await ctx.schedule_tasks(sync_account, {f"acct-{n:04d}": {"account": n} for n in range(40)})
    await ctx.schedule_task(remind, "weekly-digest", schedule="0 8 * * mon", timezone="Europe/Berlin")
    await ctx.pause_task(remind, prefix="eu-", note="EU mail relay maintenance", by="alice")
    await ctx.pause_task(tasks["refresh_cache"], note="cache cluster migration", by="bob")
    parent, _ = remind.instance_key("us-zz-broken")
    await ctx.schedule_task(remind, "us-zz-broken")
    await ctx.repository.write_raw_spec(parent, "us-zz-broken", '{"lease": "garbage"')


async def serve(database: Path, ready: threading.Event, done: threading.Event, address: list[str]) -> None:
    app, tasks = demo_app(database)
    async with app.create() as ctx, anyio.create_task_group() as tg:
        tg.start_soon(ctx.run)
        await populate(ctx, tasks)
        for _ in range(3):  # a few real runs for the history
            await ctx.run_task_now(tasks["nightly_report"])
            for _ in range(100):
                await anyio.sleep(0.1)
                state = await ctx.get_task(tasks["nightly_report"])
                if state is not None and state.locked_until is None and state.scheduled_at > ctx.clock.now():
                    break
        await anyio.sleep(2.5)  # sync_prices fails and goes into retry
        sock = bind("127.0.0.1", 0)
        address.append(f"http://127.0.0.1:{sock.getsockname()[1]}/")
        tg.start_soon(serve_alongside, dashboard(ctx, actions=True, token=TOKEN, title="Billing workers"), sock)
        ready.set()
        await anyio.to_thread.run_sync(done.wait)
        ctx.shutdown()
        tg.cancel_scope.cancel()


def shoot(url: str, out: Path, chromium: str) -> list[Path]:
    from playwright.sync_api import sync_playwright

    shots = [
        ("dashboard-overview.png", "", "#tasks", False),
        ("dashboard-task.png", "#/task/remind", "#instances", False),
        ("dashboard-static-task.png", "#/task/nightly_report", "#history", True),
        ("dashboard-problems.png", "#/problems", "#problems", False),
    ]
    written = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 760}, device_scale_factor=1)
            for name, route, selector, whole in shots:
                page.goto(url + route)
                page.wait_for_selector(selector, timeout=20_000)
                page.wait_for_timeout(200)  # fonts and layout settle
                path = out / name
                page.screenshot(path=str(path), full_page=whole)
                written.append(path)
        finally:
            browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="folder for the PNG files")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    logging.getLogger("pyncette").setLevel(logging.CRITICAL)  # sync_prices fails on purpose
    args.out.mkdir(parents=True, exist_ok=True)
    ready, done = threading.Event(), threading.Event()
    address: list[str] = []
    errors: list[BaseException] = []
    with tempfile.TemporaryDirectory(prefix="pyncette-shots-") as tmp:

        def server() -> None:
            try:
                anyio.run(serve, Path(tmp) / "demo.db", ready, done, address)
            except BaseException as exc:
                errors.append(exc)
                ready.set()

        thread = threading.Thread(target=server, daemon=True)
        thread.start()
        started = time.monotonic()
        ready.wait(timeout=120)
        try:
            if errors or not address:
                raise SystemExit(f"the demo app did not start: {errors or 'timed out'}")
            for path in shoot(address[0], args.out, args.chromium):
                print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
        finally:
            done.set()
            thread.join(timeout=60)
    print(f"done in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
