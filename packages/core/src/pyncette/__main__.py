"""``python -m pyncette``: the command line (see :mod:`pyncette.cli`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
