"""The seed documentation snippet for this backend runs verbatim as a process.

The app-level recovery test lives in test_conformance.py (pyncette_conformance.RecoverySuite).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
import pytest

from pyncette_conformance import run_script_until_interrupted
from pyncette_postgres import backend

pytestmark = pytest.mark.anyio


# --- the seed's snippet -----------------------------------------------------------------------

# The seed's snippet with its missing comma fixed. The seed names the database 'pyncette', which
# this server need not have: the URL points at the test database instead (and a fresh table);
# everything else is as in the seed.
SEED_SCRIPT = """\
from pyncette import Pyncette, Context
from pyncette.postgres import postgres_repository

app = Pyncette(
    repository_factory=postgres_repository,
    postgres_url={url!r},
    postgres_table_name={table!r}
)

@app.task(schedule='* * * * * */10')
async def foo(context: Context):
    print('This will run every 10 seconds')

if __name__ == '__main__':
    app.main()
"""


async def test_seed_snippet_runs(postgres_url: str, tmp_path: Path) -> None:
    table = "pyncette_tasks_" + uuid.uuid4().hex[:8]
    script = tmp_path / "seed_app.py"
    script.write_text(SEED_SCRIPT.format(url=postgres_url, table=table))
    try:
        done = await anyio.to_thread.run_sync(run_script_until_interrupted, script)
    finally:
        await backend.purge(backend.settings({"postgres_url": postgres_url, "postgres_table_name": table}))
    assert "This will run every 10 seconds" in done.stdout, done.stdout
    assert done.returncode == 0, done.stdout
