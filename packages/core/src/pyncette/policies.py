"""Execution policies: what happens when a run fails, hangs, is late or finds the previous run still going.

Every policy is a task option (``@app.task``, ``@app.dynamic_task``, ``@app.partitioned_task`` and
``schedule_task``); an instance inherits its template's unless it gives its own.

* ``retry=Retry(...)``: a failed run is tried again after a growing, capped delay (:class:`Retry`).
* ``timeout=timedelta``: the body is cancelled when it runs longer; that counts as a failure.
* ``catchup_window=timedelta`` and ``coalesce=``: what a run found late (after downtime) does
  (:data:`Coalesce`).
* ``overlap=``: whether a recurring task's next run may start while the previous one still runs, in any
  process (:data:`Overlap`).
* ``jitter=timedelta``: a deterministic offset per run, the same in every process.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from .errors import ConfigurationError

#: ``"all"``: every missed run within the catch-up window runs (the default); ``"latest"``: only the most
#: recent missed one runs; ``"earliest"``: only the first one runs, then the schedule jumps to the
#: future (Pyncette 1.x's ``fast_forward=True``).
Coalesce = Literal["all", "latest", "earliest"]
#: ``"allow"``: no coordination beyond the execution mode (the default); ``"skip"``: a run that comes due
#: while the previous one still runs is skipped; ``"wait"``: it starts once the previous one is over.
Overlap = Literal["allow", "skip", "wait"]
#: What a run whose retries are exhausted does: ``"skip"`` to the next scheduled run (the default of
#: recurring tasks) or ``"delete"`` the record (the default, and the only choice, of once-off instances).
Exhausted = Literal["skip", "delete", "pause"]

COALESCE_VALUES: tuple[str, ...] = get_args(Coalesce)
OVERLAP_VALUES: tuple[str, ...] = get_args(Overlap)
EXHAUSTED_VALUES: tuple[str, ...] = get_args(Exhausted)

#: The longest retry delay allowed (a longer one would outlive any lease bookkeeping worth having).
MAX_DELAY = timedelta(days=365)


#: The most runs a task's history keeps.
MAX_HISTORY = 1000


def _duration(name: str, value: object, *, allow_zero: bool = False) -> timedelta:
    lower = "a timedelta >= 0" if allow_zero else "a positive timedelta"
    if (
        not isinstance(value, timedelta)
        or value < timedelta(0)
        or (value == timedelta(0) and not allow_zero)
        or value > MAX_DELAY
    ):
        raise ConfigurationError(f"invalid {name} {value!r}: must be {lower} of at most {MAX_DELAY.days} days")
    return value


@dataclass(frozen=True)
class Retry:
    """Retry a failed run up to ``attempts`` times in all, waiting ``backoff * 2**(n-1)`` (at most
    ``max_backoff``) before try ``n + 1``.

    Attributes:
        attempts: how many times one scheduled run is tried, the first included (``>= 1``).
        backoff: the delay before the first retry.
        max_backoff: the cap of the growing delay.
        jitter: a fraction (0 to 1) of each delay added at random, so that many failing runs do not retry in
            step.
        retry_on: the exception types that are retried (default: any ``Exception``); any other failure
            exhausts the run at once. Set it on a static task or a template (it cannot be stored with an
            instance).
        on_exhausted: ``"skip"`` to the next scheduled run, ``"delete"`` the record, or ``"pause"`` it (a recurring
            task or instance is rescheduled to its next run, a once-off instance keeps its run, and either is
            paused for every process until resumed;
            needs a backend with the ``control`` capability, else it skips); ``None`` means skip for
            recurring tasks and delete for once-off instances. Listeners of the ``exhausted`` event are told
            in every case.
    """

    attempts: int = 3
    backoff: timedelta = timedelta(seconds=1)
    max_backoff: timedelta = timedelta(minutes=5)
    jitter: float = 0.0
    retry_on: tuple[type[BaseException], ...] = field(default=(Exception,))
    on_exhausted: Exhausted | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or isinstance(self.attempts, bool) or not 1 <= self.attempts <= 10_000:
            raise ConfigurationError(f"invalid Retry attempts {self.attempts!r}: must be an integer from 1 to 10000")
        _duration("Retry backoff", self.backoff, allow_zero=True)
        _duration("Retry max_backoff", self.max_backoff, allow_zero=True)
        if self.max_backoff < self.backoff:
            raise ConfigurationError(
                f"invalid Retry max_backoff {self.max_backoff!r}: must be >= backoff {self.backoff!r}"
            )
        if not isinstance(self.jitter, (int, float)) or isinstance(self.jitter, bool) or not 0 <= self.jitter <= 1:
            raise ConfigurationError(f"invalid Retry jitter {self.jitter!r}: must be a number from 0 to 1")
        retry_on = self.retry_on if isinstance(self.retry_on, tuple) else (self.retry_on,)
        if not retry_on or not all(isinstance(t, type) and issubclass(t, BaseException) for t in retry_on):
            raise ConfigurationError(f"invalid Retry retry_on {self.retry_on!r}: must be exception types")
        object.__setattr__(self, "retry_on", retry_on)
        if self.on_exhausted is not None and self.on_exhausted not in EXHAUSTED_VALUES:
            raise ConfigurationError(
                f"invalid Retry on_exhausted {self.on_exhausted!r}: must be one of {', '.join(EXHAUSTED_VALUES)}"
            )

    def delay(self, failures: int, seed: str) -> timedelta:
        """The wait before the next try after ``failures`` failed ones (``>= 1``); the random part is
        derived from ``seed`` (the run), so it is reproducible."""
        step = self.backoff * (2 ** min(failures - 1, 40))
        base: timedelta = min(step, self.max_backoff)
        if self.jitter:
            base += base * self.jitter * fraction(f"{seed}#{failures}")
        return base

    def to_json(self) -> dict[str, Any]:
        """The stored form (``retry_on`` is not stored; an instance takes its template's)."""
        data: dict[str, Any] = {
            "n": self.attempts,
            "b": self.backoff.total_seconds(),
            "mb": self.max_backoff.total_seconds(),
        }
        if self.jitter:
            data["j"] = self.jitter
        if self.on_exhausted is not None:
            data["x"] = self.on_exhausted
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], retry_on: tuple[type[BaseException], ...] = (Exception,)) -> Retry:
        return cls(
            attempts=data["n"],
            backoff=timedelta(seconds=data["b"]),
            max_backoff=timedelta(seconds=data["mb"]),
            jitter=data.get("j", 0.0),
            retry_on=retry_on,
            on_exhausted=data.get("x"),
        )


def run_key(parent: str, name: str, nominal: datetime) -> str:
    """Names one scheduled run of one record: the seed of its retry jitter and its jitter offset."""
    return f"{parent}/{name}@{nominal.isoformat()}"


def fraction(seed: str) -> float:
    """A number in [0, 1) derived from ``seed``: the same in every process (unlike ``random``)."""
    digest = hashlib.blake2b(seed.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class Policies:
    """The execution policies of one task (see the module docstring). ``None`` everywhere is Pyncette 1.x."""

    retry: Retry | None = None
    timeout: timedelta | None = None
    catchup_window: timedelta | None = None
    coalesce: Coalesce = "all"
    overlap: Overlap = "allow"
    jitter: timedelta | None = None
    #: Keep the last ``history`` runs of each record (0: no history, the default).
    history: int = 0
    #: Forget history entries older than this (``None``: keep the last ``history`` whatever their age).
    history_max_age: timedelta | None = None
    #: No policy is set (Pyncette 1.x's behaviour): the runtime takes its short path.
    plain: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        plain = self.retry is None and self.timeout is None and self.catchup_window is None and not self.jitter
        object.__setattr__(self, "plain", plain and self.coalesce == "all" and self.overlap == "allow")

    @classmethod
    def build(
        cls,
        *,
        retry: object = None,
        timeout: object = None,
        catchup_window: object = None,
        coalesce: object = "all",
        overlap: object = "allow",
        jitter: object = None,
        history: object = 0,
        history_max_age: object = None,
    ) -> Policies:
        """Validate the options, naming the bad value and what is allowed."""
        if not isinstance(history, int) or isinstance(history, bool) or not 0 <= history <= MAX_HISTORY:
            raise ConfigurationError(f"invalid history {history!r}: must be an integer from 0 to {MAX_HISTORY}")
        if history_max_age is not None and not history:
            raise ConfigurationError("history_max_age= needs history= (how many runs to keep)")
        if retry is not None and not isinstance(retry, Retry):
            raise ConfigurationError(f"invalid retry {retry!r}: use pyncette.Retry(attempts=..., backoff=...)")
        if coalesce not in COALESCE_VALUES:
            raise ConfigurationError(f"invalid coalesce {coalesce!r}: must be one of {', '.join(COALESCE_VALUES)}")
        if overlap not in OVERLAP_VALUES:
            raise ConfigurationError(f"invalid overlap {overlap!r}: must be one of {', '.join(OVERLAP_VALUES)}")
        return cls(
            retry=retry,
            timeout=None if timeout is None else _duration("timeout", timeout),
            catchup_window=None if catchup_window is None else _duration("catchup_window", catchup_window),
            coalesce=coalesce,  # type: ignore[arg-type]
            overlap=overlap,  # type: ignore[arg-type]
            jitter=None if jitter is None else _duration("jitter", jitter, allow_zero=True) or None,
            history=history,
            history_max_age=None if history_max_age is None else _duration("history_max_age", history_max_age),
        )

    @property
    def late_rules(self) -> bool:
        """Whether a late run is treated specially (a catch-up window, or coalescing)."""
        return self.catchup_window is not None or self.coalesce != "all"

    def offset(self, parent: str, name: str, nominal: datetime) -> timedelta:
        """The jitter of the run due at ``nominal``: the same for that run in every process."""
        if not self.jitter:
            return timedelta(0)
        return self.jitter * fraction(run_key(parent, name, nominal))

    def options(self) -> dict[str, Any]:
        """The policies as the keyword options of a task (``retry=``, ``timeout=``, ...)."""
        return {
            "retry": self.retry,
            "timeout": self.timeout,
            "catchup_window": self.catchup_window,
            "coalesce": self.coalesce,
            "overlap": self.overlap,
            "jitter": self.jitter,
            "history": self.history,
            "history_max_age": self.history_max_age,
        }

    def to_json(self) -> dict[str, Any]:
        """The stored form, keys only for what differs from the default."""
        data: dict[str, Any] = {}
        if self.retry is not None:
            data["retry"] = self.retry.to_json()
        if self.timeout is not None:
            data["timeout"] = self.timeout.total_seconds()
        if self.catchup_window is not None:
            data["catchup"] = self.catchup_window.total_seconds()
        if self.coalesce != "all":
            data["coalesce"] = self.coalesce
        if self.overlap != "allow":
            data["overlap"] = self.overlap
        if self.jitter:
            data["jitter"] = self.jitter.total_seconds()
        if self.history:
            data["history"] = self.history
        if self.history_max_age is not None:
            data["history_age"] = self.history_max_age.total_seconds()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], retry_on: tuple[type[BaseException], ...] = (Exception,)) -> Policies:
        def seconds(key: str) -> timedelta | None:
            return None if key not in data else timedelta(seconds=data[key])

        retry = data.get("retry")
        return cls.build(
            retry=None if retry is None else Retry.from_json(retry, retry_on),
            timeout=seconds("timeout"),
            catchup_window=seconds("catchup"),
            coalesce=data.get("coalesce", "all"),
            overlap=data.get("overlap", "allow"),
            jitter=seconds("jitter"),
            history=data.get("history", 0),
            history_max_age=seconds("history_age"),
        )


#: The keyword options that make up :class:`Policies`.
POLICY_OPTIONS = frozenset(
    {"retry", "timeout", "catchup_window", "coalesce", "overlap", "jitter", "history", "history_max_age"}
)


def pop_policies(options: dict[str, Any]) -> Policies:
    """Take the policy options out of a task's keyword ``options`` and validate them."""
    return Policies.build(**{name: options.pop(name) for name in list(options) if name in POLICY_OPTIONS})


__all__ = ["Coalesce", "Exhausted", "Overlap", "Policies", "Retry", "fraction", "pop_policies", "run_key"]
