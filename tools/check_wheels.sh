#!/usr/bin/env bash
# Build every distribution's wheel and install them into fresh virtual environments outside the workspace.
# Catches packaging mistakes that editable installs hide: missing modules, wrong entry points,
# extras pinned to the wrong version.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
version=$(cat VERSION)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Derived from the folders: a new packages/backend-<name>/ is checked without touching this script.
packages=(packages/*/ conformance/)
backends=$(for folder in packages/backend-*/; do folder=${folder%/}; printf '%s ' "${folder#packages/backend-}"; done)
for package in "${packages[@]}"; do
    python3 -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" "./$package"
done
ls "$work/dist"
[ "$(ls "$work/dist"/*.whl | wc -l)" -eq "${#packages[@]}" ] || { echo "expected ${#packages[@]} wheels" >&2; exit 1; }

# Only the core wheel: memory and sqlite are the only backends; 1.x paths of missing backends name the extra.
python3 -m venv "$work/core"
"$work/core/bin/pip" install --quiet "$work/dist/pyncette-$version-py3-none-any.whl"
(cd "$work" && "$work/core/bin/python" - <<'PY'
import pyncette.backends
names = [b.name for b in pyncette.backends.available()]
assert names == ["memory", "sqlite"], names
from pyncette.sqlite import sqlite_repository
try:
    from pyncette.redis import redis_repository
except ImportError as exc:
    # A development build is not on the package index: the hint is the checkout's script, else the pinned extra.
    from importlib.metadata import version
    release = version("pyncette")
    if "dev" in release or "+" in release:
        assert "python tools/install.py redis" in str(exc), exc
    else:
        assert f'pip install "pyncette[redis]=={release}"' in str(exc), exc
else:
    raise AssertionError("pyncette.redis imported without pyncette-redis installed")
print("core-only wheel: OK", names)
PY
)
# The dashboard is a separate distribution: without it, the command names the extra.
status=0
"$work/core/bin/pyncette" dashboard nowhere.py 2>"$work/dashboard.err" || status=$?
[ "$status" -eq 2 ] && grep -q 'pip install "pyncette\[dashboard\]"' "$work/dashboard.err" \
    || { echo "pyncette dashboard without pyncette-dashboard: status $status, $(cat "$work/dashboard.err")" >&2; exit 1; }

# Everything through the extras: pip must resolve each sibling at exactly this version from the built wheels.
python3 -m venv "$work/all"
"$work/all/bin/pip" install --quiet --find-links "$work/dist" "pyncette[all,dashboard]==$version" "pyncette-conformance==$version"
"$work/all/bin/pip" check
(cd "$work" && "$work/all/bin/python" - "$version" $backends <<'PY'
import importlib
import sys
from importlib.metadata import requires, version

expected, backends = sys.argv[1], sys.argv[2:]
import pyncette.backends

for name in ("redis", "postgres", "mysql", "dynamodb"):  # Pyncette 1.x import paths keep working
    module = importlib.import_module(f"pyncette.{name}")
    assert module.backend.name == name, module
infos = pyncette.backends.available()
assert [b.name for b in infos] == sorted([*backends, "memory", "sqlite"]), infos
for dist in ("pyncette", "pyncette-conformance", "pyncette-dashboard", *(f"pyncette-{name}" for name in backends)):
    assert version(dist) == expected, (dist, version(dist))
pin = f"pyncette-dashboard=={expected}; extra == 'dashboard'"
assert pin in (requires("pyncette") or []), (pin, requires("pyncette"))
import pyncette_dashboard  # the static page ships inside the wheel
from importlib.resources import files

for name in ("index.html", "app.js", "style.css"):
    assert (files("pyncette_dashboard") / "static" / name).is_file(), name
assert (files("pyncette_dashboard") / "py.typed").is_file()
for extra in backends:
    pin = f"pyncette-{extra}=={expected}; extra == '{extra}'"
    assert pin in (requires("pyncette") or []), (pin, requires("pyncette"))
assert pyncette.backends.KNOWN_EXTRAS == {name: name for name in backends}, pyncette.backends.KNOWN_EXTRAS
for info in infos:
    print(f"  {info.name:9} {info.distribution} {info.version}")
print("all wheels: OK")
PY
)
