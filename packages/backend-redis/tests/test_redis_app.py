"""The seed documentation snippet for this backend runs verbatim as a process.

The app-level recovery test lives in test_conformance.py (pyncette_conformance.RecoverySuite).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from pyncette_conformance import run_script_until_interrupted
from pyncette_redis import backend

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- the seed's snippets ----------------------------------------------------------------------

SEED_SCRIPT = """\
from pyncette import Pyncette, Context
from pyncette.redis import redis_repository

{app_line}

@app.task(schedule='* * * * * */10')
async def foo(context: Context):
    print('This will run every 10 seconds')

if __name__ == '__main__':
    app.main()
"""

SEED_APPS = {
    "plain": "app = Pyncette(repository_factory=redis_repository, redis_url='redis://localhost')",
    "namespaced": (
        "app = Pyncette(repository_factory=redis_repository, redis_url='redis://localhost', "
        "redis_namespace='my_super_app')"
    ),
}


@pytest.mark.parametrize("variant", sorted(SEED_APPS))
async def test_seed_snippet_runs(variant: str, redis_url: str, tmp_path: Path) -> None:
    script = tmp_path / "seed_app.py"
    script.write_text(SEED_SCRIPT.format(app_line=SEED_APPS[variant]))
    purge_options: dict[str, Any] = {"redis_url": "redis://localhost"}
    if variant == "namespaced":
        purge_options["redis_namespace"] = "my_super_app"
    try:
        done = await anyio.to_thread.run_sync(run_script_until_interrupted, script)
    finally:
        await backend.purge(backend.settings(purge_options))
    assert "This will run every 10 seconds" in done.stdout, done.stdout
    assert done.returncode == 0, done.stdout
