"""The seed documentation snippet for this backend runs verbatim as a process.

The app-level recovery test lives in test_conformance.py (pyncette_conformance.RecoverySuite).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from pyncette_conformance import run_script_until_interrupted
from pyncette_dynamodb import backend

pytestmark = pytest.mark.anyio


# --- the seed's snippet -----------------------------------------------------------------------

# The seed's snippet as it is (region and table too), plus the endpoint of the test server.
SEED_SCRIPT = """\
from pyncette import Pyncette, Context
from pyncette.dynamodb import dynamodb_repository

app = Pyncette(
    repository_factory=dynamodb_repository,
    dynamodb_region_name="eu-west-1",
    dynamodb_table_name="pyncette",
    dynamodb_endpoint={endpoint!r},
)

@app.task(schedule='* * * * * */10')
async def foo(context: Context):
    print('This will run every 10 seconds')

if __name__ == '__main__':
    app.main()
"""


async def test_seed_snippet_runs(dynamodb_endpoint: str, tmp_path: Path) -> None:
    script = tmp_path / "seed_app.py"
    script.write_text(SEED_SCRIPT.format(endpoint=dynamodb_endpoint))
    try:
        done = await anyio.to_thread.run_sync(run_script_until_interrupted, script)
    finally:
        await backend.purge(
            {
                "dynamodb_region_name": "eu-west-1",
                "dynamodb_table_name": "pyncette",
                "dynamodb_endpoint": dynamodb_endpoint,
            }
        )
    assert "This will run every 10 seconds" in done.stdout, done.stdout
    assert done.returncode == 0, done.stdout
