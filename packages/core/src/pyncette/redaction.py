"""Keeping secrets out of messages: the one redaction function every backend, the CLI and the logs use.

:func:`redact` masks, in any text:

* the password of every URL's user-info part (``redis://user:secret@host`` -> ``redis://user:***@host``);
* the value of every URL query parameter whose name suggests a secret (``password``, ``pass``,
  ``pwd``, ``secret``, ``token``, ``key``, ``auth``, ``credential``, ... anywhere in the name);
* every value registered with :func:`register_secret`: the option parser registers the value of
  each option declared secret, and the passwords and secret parameters of URL options.

Every logger obtained through :func:`get_logger` (all of Pyncette's, first-party backends' included)
passes its records through :class:`RedactingFilter`, tracebacks included.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "***"

#: Fragments of query-parameter names that mark the value as secret (matched case-insensitively).
SECRET_NAME_PARTS = ("pass", "pwd", "secret", "token", "key", "auth", "credential", "signature")

#: Values shorter than this are not masked by value (masking every "ab" would garble messages);
#: URL passwords and secret parameters are masked by position whatever their length.
MIN_SECRET_LENGTH = 4

_SECRET_NAME = "|".join(SECRET_NAME_PARTS)
# scheme://user:password@host -- the password may contain '@' (the last '@' of the netloc ends it).
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s/?#:@]*:)(?P<password>[^\s/?#]*)(?P<tail>@)")
# ?password=... or &api_key=... (the name contains one of the secret fragments).
_QUERY = re.compile(rf"(?P<head>[?&;][^\s=&#;]*(?:{_SECRET_NAME})[^\s=&#;]*=)(?P<value>[^\s&#;'\"]*)", re.IGNORECASE)

_known: set[str] = set()
_known_lock = threading.Lock()
_pattern: re.Pattern[str] | None = None


def is_secret_name(name: str) -> bool:
    """Whether a parameter or option name suggests its value is a secret."""
    lowered = name.lower()
    return any(part in lowered for part in SECRET_NAME_PARTS)


def url_secrets(url: str) -> list[str]:
    """The secrets inside a URL: its user-info password and the values of secret-looking query parameters."""
    try:
        parts = urlsplit(url)
        found = [parts.password or ""]
        found += [value for name, value in parse_qsl(parts.query, keep_blank_values=True) if is_secret_name(name)]
    except ValueError:  # not parseable as a URL: nothing positional to find
        return []
    # Both the encoded and the decoded spelling may show up in a message.
    return [spelling for secret in found if secret for spelling in {secret, unquote(secret)}]


def register_secret(*values: str) -> None:
    """Mask these values wherever they appear in later messages and log lines."""
    global _pattern
    fresh = {v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_LENGTH} - _known
    if not fresh:
        return
    with _known_lock:
        _known.update(fresh)
        # Longest first, so a secret containing another is masked whole.
        _pattern = re.compile("|".join(re.escape(v) for v in sorted(_known, key=len, reverse=True)))


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with every URL password, secret query parameter and registered secret (and ``extra``) masked."""
    if "://" in text:
        text = _USERINFO.sub(lambda m: m["head"] + MASK + m["tail"], text)
    if "=" in text:
        text = _QUERY.sub(lambda m: m["head"] + MASK, text)
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    for value in extra:
        if len(value) >= MIN_SECRET_LENGTH:
            text = text.replace(value, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message and traceback (see :func:`redact`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_FILTER = RedactingFilter()


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with the redacting filter attached (once)."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


__all__ = ["MASK", "RedactingFilter", "get_logger", "is_secret_name", "redact", "register_secret", "url_secrets"]
