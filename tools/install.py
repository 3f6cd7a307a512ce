"""Install Pyncette from this checkout, with any backends, into the Python that runs this script.

    python tools/install.py                     # the core: in-memory and SQLite backends
    python tools/install.py redis postgres      # + those backends (also: mysql, dynamodb)
    python tools/install.py all                 # every backend, prometheus and otel
    python tools/install.py prometheus -e       # editable install (for working on Pyncette)
    python tools/install.py dashboard           # + the web dashboard (pyncette-dashboard)

Run it with the Python of the environment to install into (e.g. ``.venv/bin/python tools/install.py
redis``). Any argument after ``--`` goes to pip. The packages of this checkout are not on the package
index (``pip install "pyncette[redis]"`` installs Pyncette 1.x from there), so pip is given the local
folders of the core and of each chosen backend together: the backends' pin on the core's version is
satisfied by the local core. Only the standard library is used.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ROOT / "packages"


def backends() -> list[str]:
    """The first-party backends: the ``packages/backend-<name>/`` folders of this checkout."""
    return sorted(
        folder.name.removeprefix("backend-")
        for folder in PACKAGES.glob("backend-*")
        if (folder / "pyproject.toml").is_file()
    )


def pip_command(
    python: str, parts: Sequence[str], *, editable: bool = False, pip_args: Sequence[str] = ()
) -> list[str]:
    """The pip command installing the core and ``parts`` (backend names, ``prometheus``, ``otel``, ``dashboard``,
    ``all``).

    Raises ValueError naming unknown parts and the allowed ones.
    """
    known = backends()
    extras = ["prometheus", "otel"]
    allowed = [*known, *extras, "dashboard", "all"]
    unknown = [part for part in parts if part not in allowed]
    if unknown:
        raise ValueError(f"unknown part(s) {', '.join(unknown)}; choose from: {', '.join(allowed)}")
    chosen = set(known) | set(extras) if "all" in parts else set(parts)
    wanted = [extra for extra in extras if extra in chosen]
    core = str(PACKAGES / "core") + (f"[{','.join(wanted)}]" if wanted else "")
    folders = [core, *(str(PACKAGES / f"backend-{name}") for name in known if name in chosen)]
    if "dashboard" in parts:
        folders.append(str(PACKAGES / "dashboard"))
    command = [python, "-m", "pip", "install", *pip_args]
    for folder in folders:
        command += ["-e", folder] if editable else [folder]
    return command


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    pip_args: list[str] = []
    if "--" in args:
        at = args.index("--")
        args, pip_args = args[:at], args[at + 1 :]
    parser = argparse.ArgumentParser(
        prog="python tools/install.py",
        description="Install Pyncette from this checkout, with the chosen backends, into this Python.",
        epilog="Arguments after -- are passed to pip.",
    )
    parser.add_argument("parts", nargs="*", metavar="PART", help=f"{', '.join(backends())}, prometheus, otel or all")
    parser.add_argument("-e", "--editable", action="store_true", help="editable install (changes apply at once)")
    parser.add_argument("--python", default=sys.executable, help="the Python to install into (default: this one)")
    parser.add_argument("--dry-run", action="store_true", help="print the pip command without running it")
    options = parser.parse_args(args)
    try:
        command = pip_command(options.python, options.parts, editable=options.editable, pip_args=pip_args)
    except ValueError as exc:
        parser.error(str(exc))
    print(shlex.join(command), flush=True)
    if options.dry_run:
        return 0
    return subprocess.run(command, check=False).returncode  # noqa: S603 - the user's own pip, with paths built above


if __name__ == "__main__":
    sys.exit(main())
