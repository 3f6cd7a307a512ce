#!/usr/bin/env bash
# Build all six wheels and install them into fresh virtual environments outside the workspace.
# Catches packaging mistakes that editable installs hide: missing modules, wrong entry points,
# extras pinned to the wrong version.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
version=$(cat VERSION)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for package in packages/core packages/backend-redis packages/backend-postgres packages/backend-mysql \
               packages/backend-dynamodb conformance; do
    python3 -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" "./$package"
done
ls "$work/dist"
[ "$(ls "$work/dist"/*.whl | wc -l)" -eq 6 ] || { echo "expected six wheels" >&2; exit 1; }

# Only the core wheel: sqlite is the only backend; 1.x paths of missing backends name the extra.
python3 -m venv "$work/core"
"$work/core/bin/pip" install --quiet "$work/dist/pyncette-$version-py3-none-any.whl"
(cd "$work" && "$work/core/bin/python" - <<'PY'
import pyncette.backends
names = [b.name for b in pyncette.backends.available()]
assert names == ["sqlite"], names
from pyncette.sqlite import sqlite_repository
try:
    from pyncette.redis import redis_repository
except ImportError as exc:
    assert 'pip install "pyncette[redis]"' in str(exc), exc
else:
    raise AssertionError("pyncette.redis imported without pyncette-redis installed")
print("core-only wheel: OK", names)
PY
)

# Everything through the extras: pip must resolve each sibling at exactly this version from the built wheels.
python3 -m venv "$work/all"
"$work/all/bin/pip" install --quiet --find-links "$work/dist" "pyncette[all]==$version" "pyncette-conformance==$version"
"$work/all/bin/pip" check
(cd "$work" && "$work/all/bin/python" - "$version" <<'PY'
import sys
from importlib.metadata import requires, version

expected = sys.argv[1]
from pyncette import Pyncette, Context
from pyncette.redis import redis_repository
from pyncette.postgres import postgres_repository
from pyncette.mysql import mysql_repository
from pyncette.dynamodb import dynamodb_repository
import pyncette.backends

infos = pyncette.backends.available()
assert [b.name for b in infos] == ["dynamodb", "mysql", "postgres", "redis", "sqlite"], infos
for dist in ("pyncette", "pyncette-redis", "pyncette-postgres", "pyncette-mysql", "pyncette-dynamodb", "pyncette-conformance"):
    assert version(dist) == expected, (dist, version(dist))
for extra in ("redis", "postgres", "mysql", "dynamodb"):
    pin = f"pyncette-{extra}=={expected}; extra == '{extra}'"
    assert pin in (requires("pyncette") or []), (pin, requires("pyncette"))
for info in infos:
    print(f"  {info.name:9} {info.distribution} {info.version}")
print("all wheels: OK")
PY
)
