"""The seed documentation snippet for this backend runs verbatim as a process.

The app-level recovery test lives in test_conformance.py (pyncette_conformance.RecoverySuite).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from pyncette_conformance import run_script_until_interrupted
from pyncette_mysql import backend

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- the seed's snippet -----------------------------------------------------------------------

# The seed's snippet with the module name corrected (pyncette.mysql, not pyncette.postgres); the
# server, credentials and table are the test server's, everything else is as in the seed.
SEED_SCRIPT = """\
from pyncette import Pyncette, Context
from pyncette.mysql import mysql_repository

app = Pyncette(
    repository_factory=mysql_repository,
    mysql_host={host!r},{port_line}
    mysql_database={database!r},
    mysql_user={user!r},
    mysql_password={password!r},
    mysql_table_name={table!r}
)

@app.task(schedule='* * * * * */10')
async def foo(context: Context):
    print('This will run every 10 seconds')

if __name__ == '__main__':
    app.main()
"""


async def test_seed_snippet_runs(mysql_options: dict[str, Any], tmp_path: Path) -> None:
    table = "pyncette_tasks_" + uuid.uuid4().hex[:8]
    port = mysql_options["mysql_port"]
    script = tmp_path / "seed_app.py"
    script.write_text(
        SEED_SCRIPT.format(
            host=mysql_options["mysql_host"],
            port_line="" if port == 3306 else f"\n    mysql_port={port!r},",
            database=mysql_options["mysql_database"],
            user=mysql_options["mysql_user"],
            password=mysql_options["mysql_password"],
            table=table,
        )
    )
    try:
        done = await anyio.to_thread.run_sync(run_script_until_interrupted, script)
    finally:
        await backend.purge(backend.settings({**mysql_options, "mysql_table_name": table}))
    assert "This will run every 10 seconds" in done.stdout, done.stdout
    assert done.returncode == 0, done.stdout
