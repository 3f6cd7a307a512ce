"""Pyncette 1.x's MongoDB backend has no Pyncette 2 counterpart (yet): importing this module fails,
saying what to do instead."""

raise ImportError(
    "Pyncette 2 has no MongoDB backend (yet). To keep running on MongoDB, stay on Pyncette 1.x "
    '(pip install "pyncette<2"). To move to Pyncette 2, switch the app to one of its backends: sqlite, '
    "redis, postgres, mysql or dynamodb, and schedule the dynamic instances again there ('pyncette migrate "
    "--from-1x' cannot read a MongoDB store). See 'Upgrading from 1.x' in the documentation.",
    name=__name__,
)
