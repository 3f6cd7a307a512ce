"""Typed options: how a backend (or the app) declares its settings, and the one converter for all of them.

A backend lists its options as :class:`Option` objects in an :class:`Options` schema::

    options = Options(
        Option("redis_url", Url("redis", "rediss", "unix"), "server URL", default="redis://localhost:6379/0"),
        Option("redis_timeout", Seconds(), "seconds a command may take", default=10.0),
        Option("redis_namespace", Identifier(r"[A-Za-z0-9_]{0,64}", "up to 64 letters, digits or _"),
               "isolates apps sharing a server", default="", isolates=True),
    )

The same conversion serves every source of values: keyword arguments of ``Pyncette(...)``
(Python values such as ``timedelta`` or ``True``), the ``pyncette`` command line (``-o KEY=VALUE``),
environment variables (``PYNCETTE_<OPTION NAME IN CAPITALS>``, e.g. ``PYNCETTE_REDIS_URL``) and the
conformance plugin. Text is accepted wherever a number, duration or boolean is expected.

A bad value is a :class:`~pyncette.errors.ConfigurationError` naming the option, the value
(masked for secrets) and what is allowed.
"""

from __future__ import annotations

import math
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs, urlsplit

from .errors import ConfigurationError
from .redaction import MASK, redact, register_secret, url_secrets

T = TypeVar("T")

#: Environment variables ``PYNCETTE_<NAME>`` set option ``<name>`` (``PYNCETTE_REDIS_URL`` -> ``redis_url``).
ENV_PREFIX = "PYNCETTE_"

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


class Kind(ABC, Generic[T]):
    """How one option's value is checked and converted."""

    #: Short type name for listings (``pyncette backends``).
    name: str = "value"

    @abstractmethod
    def convert(self, value: object) -> T:
        """The value as the backend uses it; raise :class:`ValueError` when it is not allowed."""

    @abstractmethod
    def allowed(self) -> str:
        """What is allowed, completing "expected ..." in error messages."""

    def secrets(self, value: T) -> list[str]:
        """Secrets embedded in a converted value (a URL's password); masked in every message."""
        return []


class Seconds(Kind[float]):
    """A duration: a number of seconds (int, float or text) or a :class:`~datetime.timedelta`; returns seconds."""

    name = "seconds"

    def __init__(self, minimum: float = 0.0, maximum: float | None = None, *, allow_zero: bool = False) -> None:
        self.minimum, self.maximum, self.allow_zero = minimum, maximum, allow_zero

    def convert(self, value: object) -> float:
        if isinstance(value, timedelta):
            number = value.total_seconds()
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            number = float(value.strip())  # ValueError for text that is not a number
        else:
            raise ValueError
        too_low = number < self.minimum if self.allow_zero else number <= self.minimum
        if not math.isfinite(number) or too_low or (self.maximum is not None and number > self.maximum):
            raise ValueError
        return number

    def allowed(self) -> str:
        low = f"at least {self.minimum:g}" if self.allow_zero else f"more than {self.minimum:g}"
        high = f" and at most {self.maximum:g}" if self.maximum is not None else ""
        return f"a number of seconds {low}{high}, or a timedelta"


class Integer(Kind[int]):
    """A whole number (int or decimal text) within bounds."""

    name = "integer"

    def __init__(self, minimum: int | None = None, maximum: int | None = None) -> None:
        self.minimum, self.maximum = minimum, maximum

    def convert(self, value: object) -> int:
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise ValueError
        return value

    def allowed(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"an integer from {self.minimum} to {self.maximum}"
        if self.minimum is not None:
            return f"an integer of at least {self.minimum}"
        return "an integer"


class Boolean(Kind[bool]):
    """``True``/``False``, or the text true/false, yes/no, on/off, 1/0."""

    name = "boolean"

    def convert(self, value: object) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError

    def allowed(self) -> str:
        return "True or False (as text: true/false, yes/no, on/off, 1/0)"


class Text(Kind[str]):
    """Any non-empty string (``allow_empty`` to accept ``""``)."""

    name = "text"

    def __init__(self, *, allow_empty: bool = False) -> None:
        self.allow_empty = allow_empty

    def convert(self, value: object) -> str:
        if not isinstance(value, str) or (not value and not self.allow_empty):
            raise ValueError
        return value

    def allowed(self) -> str:
        return "a string" if self.allow_empty else "a non-empty string"


class Identifier(Kind[str]):
    """A name matching ``pattern`` in full (table names, namespaces, prefixes), safe to put into queries."""

    name = "identifier"

    def __init__(self, pattern: str, description: str) -> None:
        self.pattern = re.compile(pattern)
        self.description = description

    def convert(self, value: object) -> str:
        if not isinstance(value, str) or not self.pattern.fullmatch(value):
            raise ValueError
        return value

    def allowed(self) -> str:
        return self.description


class Choice(Kind[str]):
    """One of a fixed set of strings."""

    name = "choice"

    def __init__(self, *values: str) -> None:
        self.values = values

    def convert(self, value: object) -> str:
        if not isinstance(value, str) or value not in self.values:
            raise ValueError
        return value

    def allowed(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


class Url(Kind[str]):
    """A URL with one of the given schemes. Several ``host[:port]`` separated by commas are allowed (as
    libpq-style drivers read them); every port, in the host list or in a ``port=`` parameter, must be a
    number from 1 to 65535. Its password and secret query parameters are registered as secrets, and the
    URL is never shown unmasked."""

    name = "URL"

    def __init__(self, *schemes: str) -> None:
        self.schemes = schemes

    def convert(self, value: object) -> str:
        if not isinstance(value, str) or not value:
            raise ValueError
        register_secret(*url_secrets(value))  # before anything can echo it
        try:
            parts = urlsplit(value)
        except ValueError:
            raise ValueError("malformed URL") from None
        if parts.scheme not in self.schemes:
            raise ValueError(f"scheme {parts.scheme or '(none)'!r} is not allowed")
        for host in parts.netloc.rpartition("@")[2].split(","):
            port_of(host)
        for ports in parse_qs(parts.query).get("port", []):
            for port in ports.split(","):
                _valid_port(port.strip())
        return value

    def allowed(self) -> str:
        return "a URL starting with " + " or ".join(f"{s}://" for s in self.schemes)

    def secrets(self, value: str) -> list[str]:
        return url_secrets(value)


def port_of(host: str) -> int | None:
    """The port of one ``host[:port]`` entry of a URL (``[v6]:port`` too), ``None`` when it has none;
    :class:`ValueError` when it is not a number from 1 to 65535."""
    tail = host.rsplit("]", 1)[1] if host.startswith("[") else host
    text = tail.rpartition(":")[2] if ":" in tail else ""
    return _valid_port(text) if text else None


def _valid_port(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,5}", text) or not 0 < int(text) <= 65535:
        raise ValueError("malformed URL (check the port)")
    return int(text)


class Custom(Kind[Any]):
    """A kind defined by a function, for the odd option (e.g. a flag that may also be an ``ssl.SSLContext``)."""

    def __init__(self, convert: Callable[[object], Any], allowed: str, name: str = "value") -> None:
        self._convert, self._allowed, self.name = convert, allowed, name

    def convert(self, value: object) -> Any:
        return self._convert(value)

    def allowed(self) -> str:
        return self._allowed


@dataclass(frozen=True)
class Option:
    """One declared option.

    Attributes:
        name: the full name, prefixed with the backend's name (``redis_url``).
        kind: how values are checked and converted.
        help: one line for listings.
        default: the value when the option is absent or ``None`` (``None``: no value).
        required: absence is an error.
        secret: the value is a secret (a password, a key): never shown, masked in every message.
        isolates: the option selects a separate namespace within shared storage (a table, a key
            prefix); the conformance suite sets a fresh value for each test.
    """

    name: str
    kind: Kind[Any]
    help: str
    default: Any = None
    required: bool = False
    secret: bool = False
    isolates: bool = False

    def parse(self, value: object) -> Any:
        """The converted value of ``value`` (``None`` meaning absent); :class:`ConfigurationError` when bad."""
        if value is None:
            if self.required:
                raise ConfigurationError(f"missing option {self.name}: {self.help}")
            return self.default
        if self.secret and isinstance(value, str):
            register_secret(value)
        try:
            return self.kind.convert(value)
        except (ValueError, TypeError) as exc:
            detail = f" ({redact(str(exc))})" if str(exc) else ""
            raise ConfigurationError(
                f"invalid {self.name} {self.show(value)}: expected {self.kind.allowed()}{detail}"
            ) from None

    def show(self, value: object) -> str:
        """``value`` as it may appear in a message: masked when secret, URLs redacted."""
        if self.secret:
            return MASK
        return redact(repr(value))

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description for listings."""
        default = None if self.default is None or self.secret else self.default
        if isinstance(default, str):
            default = redact(default)
        return {
            "name": self.name,
            "type": self.kind.name,
            "default": default,
            "required": self.required,
            "secret": self.secret,
            "isolates": self.isolates,
            "help": self.help,
        }


class Settings(Mapping[str, Any]):
    """Validated option values (defaults filled in), as :meth:`pyncette.abc.Backend.open` receives them."""

    def __init__(self, values: Mapping[str, Any], secrets: list[str]) -> None:
        self._values = dict(values)
        self.secrets: tuple[str, ...] = tuple(s for s in secrets if s)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def redact(self, text: str) -> str:
        """``text`` with these settings' secrets (and every other known secret) masked."""
        return redact(text, self.secrets)

    def __repr__(self) -> str:
        return f"Settings({', '.join(sorted(self._values))})"


class Options(Mapping[str, Option]):
    """The options of one backend (or of the app), by name.

    ``check`` validates combinations once every option is converted (e.g. a pool's minimum
    size not exceeding its maximum); it raises :class:`ConfigurationError`.
    """

    def __init__(self, *options: Option, check: Callable[[Settings], None] | None = None) -> None:
        self._options = {option.name: option for option in options}
        self._check = check

    def __getitem__(self, key: str) -> Option:
        return self._options[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._options)

    def __len__(self) -> int:
        return len(self._options)

    def parse(self, values: Mapping[str, Any], *, owner: str) -> Settings:
        """Convert ``values`` (all meant for ``owner``); unknown names are an error listing the allowed ones."""
        unknown = sorted(set(values) - set(self._options))
        if unknown:
            allowed = ", ".join(sorted(self._options)) or "none"
            raise ConfigurationError(f"unknown {owner} option(s) {', '.join(unknown)}; allowed: {allowed}")
        converted: dict[str, Any] = {}
        secrets: list[str] = []
        for name, option in self._options.items():
            value = converted[name] = option.parse(values.get(name))
            if value is not None:
                if option.secret and isinstance(value, str):
                    secrets.append(value)
                secrets.extend(option.kind.secrets(value))
        settings = Settings(converted, secrets)
        if self._check is not None:
            self._check(settings)
        return settings

    def from_environment(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """The values of these options set as ``PYNCETTE_<NAME>`` environment variables (as text)."""
        environ = os.environ if environ is None else environ
        found = {}
        for name in self._options:
            text = environ.get(ENV_PREFIX + name.upper())
            if text is not None:
                found[name] = text
        return found


def environment_name(option: str) -> str:
    """The environment variable that sets ``option``."""
    return ENV_PREFIX + option.upper()


__all__ = [
    "ENV_PREFIX",
    "Boolean",
    "Choice",
    "Custom",
    "Identifier",
    "Integer",
    "Kind",
    "Option",
    "Options",
    "Seconds",
    "Settings",
    "Text",
    "Url",
    "environment_name",
    "port_of",
]
