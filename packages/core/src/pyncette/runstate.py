"""What the runtime keeps in :attr:`pyncette.abc.Record.state`: the attempt counter and the last run.

The stored form is compact JSON text owned by core (backends store it verbatim). A record written before
the field existed, or by Pyncette 1.x, has none and reads as :data:`EMPTY`. Unknown keys are ignored and
a value that cannot be read counts as absent, so a damaged state never stops a task from running.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal, get_args

from .redaction import redact

#: How a run ended: ``succeeded``, ``failed`` (the body raised), ``timed_out`` (cancelled by ``timeout=``),
#: ``skipped`` (not run: the previous run still ran, ``overlap="skip"``), ``missed`` (not run: later than
#: the catch-up window).
Outcome = Literal["succeeded", "failed", "timed_out", "skipped", "missed"]

OUTCOMES: tuple[str, ...] = get_args(Outcome)

#: The longest error summary kept (the exception type and the start of its message).
MAX_ERROR = 500


@dataclass(frozen=True, slots=True)
class RunState:
    """The bookkeeping of one record.

    Attributes:
        failures: how many times the current scheduled run has failed (0: the next try is the first).
        nominal: the scheduled time of the current run as the schedule gives it, where the stored
            ``scheduled_at`` differs (a retry's delay or a jitter offset); ``None`` when they agree.
        last_started, last_finished: when the last run's body started and ended.
        last_outcome: how it ended (:data:`Outcome`); ``None`` before the first run.
        last_error: ``Type: message`` of the last failure, at most :data:`MAX_ERROR` characters.
        origin: trace propagation headers (``traceparent`` and the like) of the call that scheduled the
            instance, kept until its first run has succeeded (see :func:`pyncette.otel.use_opentelemetry`).
        regular: set while a run triggered by ``run_task_now`` waits or runs: the stored ``scheduled_at``
            of the regular next run, restored (with the rest of this state) once the triggered run is over.
        runs: how many runs went into the task's history (kept only with the ``history=`` option): the
            next run's entry goes to slot ``runs % history``.
    """

    failures: int = 0
    nominal: datetime | None = None
    last_started: datetime | None = None
    last_finished: datetime | None = None
    last_outcome: Outcome | None = None
    last_error: str | None = None
    origin: dict[str, str] | None = None
    regular: datetime | None = None
    runs: int = 0

    @property
    def attempt(self) -> int:
        """The number of the next (or current) try of the scheduled run, from 1."""
        return self.failures + 1

    def encode(self) -> str:
        """The stored text (compact JSON; built by hand, as it is written with every commit)."""
        parts = []
        if self.failures:
            parts.append(f'"a":{self.failures:d}')
        if self.nominal is not None:
            parts.append(f'"n":"{self.nominal.isoformat()}"')
        if self.last_started is not None:
            parts.append(f'"ls":"{self.last_started.isoformat()}"')
        if self.last_finished is not None:
            parts.append(f'"lf":"{self.last_finished.isoformat()}"')
        if self.last_outcome is not None:
            parts.append(f'"lo":"{self.last_outcome}"')
        if self.last_error is not None:
            parts.append(f'"le":{json.dumps(self.last_error, ensure_ascii=False)}')
        if self.origin:
            parts.append(f'"o":{json.dumps(self.origin, ensure_ascii=False, separators=(",", ":"))}')
        if self.regular is not None:
            parts.append(f'"r":"{self.regular.isoformat()}"')
        if self.runs:
            parts.append(f'"h":{self.runs:d}')
        return "{" + ",".join(parts) + "}"

    def finished(
        self,
        outcome: Outcome,
        *,
        started: datetime | None,
        finished: datetime,
        failures: int = 0,
        nominal: datetime | None = None,
        error: BaseException | None = None,
    ) -> RunState:
        """The state after a run (or a run not made) ended with ``outcome``."""
        if outcome == "succeeded" and not failures and nominal is None:
            return RunState(0, None, started, finished, "succeeded", None)
        return replace(
            self,
            failures=failures,
            nominal=nominal,
            last_started=started,
            last_finished=finished,
            last_outcome=outcome,
            last_error=summary(error) if error is not None else self.last_error if outcome != "succeeded" else None,
        )

    def starting(self, started: datetime) -> RunState:
        """The state stored when a run starts without its outcome being stored afterwards (at-most-once):
        the start time only; the outcome and error of the previous run no longer apply."""
        return RunState(0, None, started, None, None, None, self.origin)


EMPTY = RunState()


def decode(text: str | None) -> RunState:
    """Read stored state; ``None``, damaged text or damaged values read as :data:`EMPTY` (in part or whole)."""
    if not text:
        return EMPTY
    try:
        data = json.loads(text)
    except ValueError:
        return EMPTY
    if not isinstance(data, dict):
        return EMPTY
    failures = _count(data.get("a"))
    outcome = data.get("lo")
    error = data.get("le")
    origin = data.get("o")
    return RunState(
        failures=failures,
        nominal=_time(data.get("n")),
        last_started=_time(data.get("ls")),
        last_finished=_time(data.get("lf")),
        last_outcome=outcome if outcome in OUTCOMES else None,
        last_error=error[:MAX_ERROR] if isinstance(error, str) else None,
        origin={str(k): str(v) for k, v in origin.items()} if isinstance(origin, dict) else None,
        regular=_time(data.get("r")),
        runs=_count(data.get("h")),
    )


def bookkeeping(text: str | None) -> RunState:
    """What a run needs of stored state (the attempt counter, the nominal time, the origin, the regular time of
    a triggered run), read cheaply: the last-run fields are left out, and a state without any of those keys
    (the common case) is not parsed at all."""
    if not text or ('"a":' not in text and '"n":' not in text and '"o":' not in text and '"r":' not in text):
        return EMPTY
    state = decode(text)
    return RunState(state.failures, state.nominal, origin=state.origin, regular=state.regular)


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def summary(error: BaseException) -> str:
    """``Type: message``, cut to :data:`MAX_ERROR` characters, with anything that looks like a secret (a URL
    password, a token parameter) masked."""
    text = redact(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"


__all__ = ["EMPTY", "MAX_ERROR", "Outcome", "RunState", "bookkeeping", "decode", "summary"]
