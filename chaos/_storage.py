"""The storage each backend of the chaos matrix runs on: a private server of its own (never a shared one)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pyncette import backends
from pyncette_conformance.servers import MariaDBServer, MotoServer, PostgresServer, PrivateServer, RedisServer

BACKENDS = ("sqlite", "redis", "postgres", "mysql", "dynamodb")

# moto accepts any credentials; real ones are never needed (the endpoint is a private moto server).
for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ.setdefault(_name, _value)


class Storage:
    """One backend's private storage for a whole matrix run: a server on a free loopback port, or (SQLite)
    a temporary directory holding one database file per cell."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.directory = Path(tempfile.mkdtemp(prefix=f"pyncette-chaos-{name}-"))
        self.server: PrivateServer | None = None

    @property
    def has_server(self) -> bool:
        return self.name != "sqlite"

    @property
    def survives_restart(self) -> bool:
        """Whether the storage keeps its data across a crash and restart (moto keeps nothing)."""
        return self.name != "dynamodb"

    def start(self) -> None:
        if self.name == "redis":
            self.server = RedisServer()
        elif self.name == "postgres":
            self.server = PostgresServer()
        elif self.name == "mysql":
            self.server = MariaDBServer(databases=("chaos",))
        elif self.name == "dynamodb":
            self.server = MotoServer()
        if self.server is not None:
            self.server.start()

    def describe(self) -> str:
        if self.server is None:
            return f"SQLite files in {self.directory}"
        return repr(self.server)

    def options(self, tag: str) -> dict[str, Any]:
        """Backend options pointing at a fresh namespace ``tag`` (a table, a key prefix, a file)."""
        server = self.server
        if self.name == "sqlite":
            return {"sqlite_database": str(self.directory / f"{tag}.db")}
        assert server is not None
        if isinstance(server, RedisServer):
            return {"redis_url": server.url, "redis_namespace": tag}
        if isinstance(server, PostgresServer):
            return {"postgres_url": server.url, "postgres_table_name": tag}
        if isinstance(server, MariaDBServer):
            return {
                "mysql_host": "127.0.0.1",
                "mysql_port": server.port,
                "mysql_user": "root",
                "mysql_database": "chaos",
                "mysql_table_name": tag,
            }
        assert isinstance(server, MotoServer)
        return {"dynamodb_endpoint": server.url, "dynamodb_region_name": "us-east-1", "dynamodb_table_name": tag}

    async def purge(self, tag: str) -> None:
        """Remove a cell's namespace (its server stays up for the next cell)."""
        backend = backends.load(self.name)
        await backend.purge(backend.settings(self.options(tag)))

    def cleanup(self) -> None:
        try:
            if self.server is not None:
                self.server.cleanup()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
