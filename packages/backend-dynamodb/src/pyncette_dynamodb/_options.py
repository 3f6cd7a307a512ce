"""The DynamoDB backend's option schema, and the typed view of validated settings the client uses."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from pyncette.errors import ConfigurationError
from pyncette.options import Boolean, Choice, Identifier, Integer, Option, Options, Seconds, Settings, Text, Url

DEFAULT_TABLE_NAME = "pyncette"
DEFAULT_PARTITION_PREFIX = "pyncette"

_CREDENTIALS = ("dynamodb_aws_access_key_id", "dynamodb_aws_secret_access_key", "dynamodb_aws_session_token")


def _check(settings: Settings) -> None:
    endpoint = settings["dynamodb_endpoint"]
    if endpoint is not None:
        parts = urlsplit(endpoint)
        # Never echo the URL here: its user-info is exactly what must not appear in a message.
        if parts.username is not None or parts.password is not None:
            raise ConfigurationError(
                "invalid dynamodb_endpoint: credentials in the URL are not used; give "
                "dynamodb_aws_access_key_id and dynamodb_aws_secret_access_key, or use the ambient AWS chain"
            )
        if parts.query or parts.fragment:
            # A query string means nothing to DynamoDB and may carry a token: refuse it, unseen.
            raise ConfigurationError(
                "invalid dynamodb_endpoint: expected http(s)://host[:port][/path], without a query string or fragment"
            )
        if not parts.hostname:
            raise ConfigurationError(
                f"invalid dynamodb_endpoint {settings.redact(repr(endpoint))}: the URL names no host"
            )
    key_id, secret, token = (settings[name] for name in _CREDENTIALS)
    if (key_id is None) != (secret is None):
        raise ConfigurationError(
            "dynamodb_aws_access_key_id and dynamodb_aws_secret_access_key go together: give both or neither"
        )
    if token is not None and key_id is None:
        raise ConfigurationError(
            "dynamodb_aws_session_token needs dynamodb_aws_access_key_id and dynamodb_aws_secret_access_key"
        )


OPTIONS = Options(
    Option(
        "dynamodb_region_name",
        Identifier(r"[a-z]{2}(-[a-z0-9]+)+", "an AWS region name such as 'eu-west-1'"),
        "AWS region, e.g. 'eu-west-1' (default: the ambient AWS configuration)",
    ),
    Option(
        "dynamodb_table_name",
        Identifier(r"[A-Za-z0-9_]{3,255}", "3-255 letters, digits or underscores"),
        "table name",
        default=DEFAULT_TABLE_NAME,
    ),
    Option(
        "dynamodb_endpoint",
        Url("http", "https"),
        "endpoint URL of a local emulator or VPC endpoint, e.g. 'http://localhost:8000' (no credentials in it)",
    ),
    Option(
        "dynamodb_partition_prefix",
        Identifier(r"[A-Za-z0-9_]{1,64}", "1-64 letters, digits or underscores"),
        "prefix of every partition key, so that several apps can share one table",
        default=DEFAULT_PARTITION_PREFIX,
        isolates=True,
    ),
    Option(
        "dynamodb_skip_table_create",
        Boolean(),
        "never create the table; a missing table is an error",
        default=False,
    ),
    Option("dynamodb_connect_timeout", Seconds(0, 300), "seconds to wait for a TCP/TLS connection", default=5.0),
    Option("dynamodb_read_timeout", Seconds(0, 3600), "seconds to wait for a response", default=10.0),
    Option(
        "dynamodb_retry_mode",
        Choice("standard", "adaptive"),
        "botocore retry mode ('adaptive' adds client-side rate limiting)",
        default="standard",
    ),
    Option("dynamodb_max_attempts", Integer(1, 20), "botocore attempts per request, the first included", default=3),
    Option(
        "dynamodb_max_pool_connections",
        Integer(1, 1000),
        "HTTP connections kept open; bounds how many writes of a batch are in flight",
        default=100,
    ),
    Option(
        "dynamodb_aws_access_key_id",
        Text(),
        "AWS access key id (default: the ambient AWS credential chain)",
        secret=True,
    ),
    Option(
        "dynamodb_aws_secret_access_key",
        Text(),
        "AWS secret access key, with dynamodb_aws_access_key_id",
        secret=True,
    ),
    Option(
        "dynamodb_aws_session_token",
        Text(),
        "AWS session token of temporary credentials, with the key id and secret key",
        secret=True,
    ),
    check=_check,
)


@dataclass(frozen=True)
class Config:
    """Validated settings of one repository, typed for the client."""

    table_name: str
    partition_prefix: str
    region_name: str | None
    endpoint: str | None
    skip_table_create: bool
    connect_timeout: float
    read_timeout: float
    retry_mode: str
    max_attempts: int
    max_pool_connections: int
    access_key_id: str | None
    secret_access_key: str | None
    session_token: str | None
    #: The settings' own secrets, masked in every message built from driver output.
    secrets: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> Config:
        """The typed view of settings validated by :data:`OPTIONS`."""
        return cls(
            table_name=settings["dynamodb_table_name"],
            partition_prefix=settings["dynamodb_partition_prefix"],
            region_name=settings["dynamodb_region_name"],
            endpoint=settings["dynamodb_endpoint"],
            skip_table_create=settings["dynamodb_skip_table_create"],
            connect_timeout=settings["dynamodb_connect_timeout"],
            read_timeout=settings["dynamodb_read_timeout"],
            retry_mode=settings["dynamodb_retry_mode"],
            max_attempts=settings["dynamodb_max_attempts"],
            max_pool_connections=settings["dynamodb_max_pool_connections"],
            access_key_id=settings["dynamodb_aws_access_key_id"],
            secret_access_key=settings["dynamodb_aws_secret_access_key"],
            session_token=settings["dynamodb_aws_session_token"],
            secrets=settings.secrets,
        )

    @property
    def explicit_credentials(self) -> bool:
        """Whether credentials were given as options (rather than taken from the ambient chain)."""
        return self.access_key_id is not None

    def __repr__(self) -> str:  # never the credentials
        return f"Config(table_name={self.table_name!r}, partition_prefix={self.partition_prefix!r})"
