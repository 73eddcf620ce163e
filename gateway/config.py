"""Settings from the environment. The only module that touches ``os.environ``: it reads
every variable, and sets the one that ``iou serve`` hands down to its workers."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from gateway.metering import money

PARTITIONS_DEFAULT = 16
PARTITIONS_MAX = 1024
SECRET_KEY_CHARS_MIN = 32  # IOU_SECRET_KEY: high-entropy text (HKDF is no password hash)
# prometheus_client's own variable: where the workers of one `iou serve` keep their metric
# files (it reads the variable itself; the gateway reads it to merge them on /metrics).
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# Internal, set by `iou serve` for the processes it starts (see Settings.embedded_attach).
EMBEDDED_ATTACH_VARIABLE = "IOU_EMBEDDED_ATTACH"


class ConfigError(Exception):
    """A bad environment value; the message is one line naming the variable."""


@dataclass(frozen=True)
class Settings:
    redis_url: str | None
    ledger_url: str | None
    data_dir: Path
    admin_token: str | None
    webhook_secret: str | None
    signup_grant_micros: int
    low_balance_default_micros: int
    amount_max_micros: int
    body_bytes_max: int
    ledger_lag_max_s: int
    partitions: int
    # Explicit, logged override of the refusal to run on a Redis that can evict balances.
    allow_unsafe_redis: bool
    # How long the proxy waits for a tool's upstream before releasing the hold.
    upstream_timeout_s: int = 30
    # Testing only: the scripts' clock adds the milliseconds stored at TEST_CLOCK_KEY to
    # Redis TIME, so a test can move a day forward (the production scripts never read it).
    test_clock: bool = False
    # Encrypts upstream credentials at rest (AES-256-GCM, key derived with HKDF). None on an
    # external Redis without IOU_SECRET_KEY: a tool with upstream_headers is then refused;
    # the embedded default generates one into <IOU_DATA_DIR>/secret_key.
    secret_key: str | None = None
    # Addresses/networks of reverse proxies whose X-Forwarded-For names the client.
    trusted_proxies: tuple[str, ...] = ()
    # Failed authentications allowed per fixed window, counted in Redis (all workers).
    auth_failures_per_client: int = 20
    auth_failures_per_credential: int = 10
    auth_failures_global: int = 1000
    auth_failure_window_s: int = 60
    # Request shape limits: nesting of a kept object such as metadata (levels, the object
    # is 1), characters of one JSON number literal in it, and the HTTP request head (URL
    # bytes, header bytes and count).
    json_depth_max: int = 32
    json_number_chars_max: int = 40
    url_bytes_max: int = 8192
    header_bytes_max: int = 16_384
    headers_count_max: int = 100
    # Slow clients: seconds allowed for the request head, for the body after the head, and
    # for an idle keep-alive connection; connections (and requests) per worker.
    header_timeout_s: int = 10
    body_timeout_s: int = 30
    keepalive_timeout_s: int = 5
    connections_max: int = 1000
    # The metric files of several workers (set by `iou serve --workers N`), merged on
    # /metrics; None in a single process.
    metrics_dir: Path | None = None
    # IOU_LOG_FORMAT: "text" (default) or "json" (one JSON object per log line).
    log_format: str = "text"
    # IOU_RECEIPT_KEY: Ed25519 private keys (base64url 32-byte seeds, comma-separated) that
    # sign receipts; the first signs, the others only stay in the JWKS so receipts signed
    # before a rotation still verify. Empty: <IOU_DATA_DIR>/receipt_key, generated at start.
    receipt_keys: tuple[str, ...] = ()
    # Set by `iou serve` for its workers and ledger writer (EMBEDDED_ATTACH_VARIABLE): they
    # use the embedded server `iou serve` owns and restarts, and never start one themselves.
    embedded_attach: bool = False

    @property
    def uses_embedded_redis(self) -> bool:
        return self.redis_url is None


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every IOU_* variable; raise ConfigError on the first bad one."""
    env = os.environ if environ is None else environ
    amount_max = _amount(env, "IOU_AMOUNT_MAX", "1000000000", money.BALANCE_MAX_MICROS, False)
    settings = Settings(
        redis_url=_redis_url(env),
        ledger_url=_ledger_url(env),
        data_dir=Path(env.get("IOU_DATA_DIR") or "./.iou"),
        admin_token=_optional_secret(env, "IOU_ADMIN_TOKEN"),
        webhook_secret=_optional_secret(env, "IOU_WEBHOOK_SECRET"),
        signup_grant_micros=_amount(env, "IOU_SIGNUP_GRANT", "10", amount_max, True),
        low_balance_default_micros=_amount(env, "IOU_LOW_BALANCE_DEFAULT", "1", amount_max, True),
        amount_max_micros=amount_max,
        body_bytes_max=_int(env, "IOU_BODY_BYTES_MAX", 65_536, 1024, 16 * 1024 * 1024),
        ledger_lag_max_s=_int(env, "IOU_LEDGER_LAG_MAX_S", 30, 1, 86_400),
        partitions=_int(env, "IOU_PARTITIONS", PARTITIONS_DEFAULT, 1, PARTITIONS_MAX),
        allow_unsafe_redis=_flag(env, "IOU_ALLOW_UNSAFE_REDIS"),
        upstream_timeout_s=_int(env, "IOU_UPSTREAM_TIMEOUT_S", 30, 1, 600),
        test_clock=_flag(env, "IOU_TEST_CLOCK"),
        secret_key=_optional_secret(env, "IOU_SECRET_KEY", SECRET_KEY_CHARS_MIN),
        trusted_proxies=_networks(env, "IOU_TRUSTED_PROXIES"),
        auth_failures_per_client=_int(env, "IOU_AUTH_FAILURES_PER_CLIENT", 20, 1, 1_000_000),
        auth_failures_per_credential=_int(env, "IOU_AUTH_FAILURES_PER_CREDENTIAL", 10, 1,
                                          1_000_000),
        auth_failures_global=_int(env, "IOU_AUTH_FAILURES_GLOBAL", 1000, 1, 100_000_000),
        auth_failure_window_s=_int(env, "IOU_AUTH_FAILURE_WINDOW_S", 60, 1, 86_400),
        json_depth_max=_int(env, "IOU_JSON_DEPTH_MAX", 32, 4, 200),
        json_number_chars_max=_int(env, "IOU_JSON_NUMBER_CHARS_MAX", 40, 24, 1000),
        url_bytes_max=_int(env, "IOU_URL_BYTES_MAX", 8192, 256, 1024 * 1024),
        header_bytes_max=_int(env, "IOU_HEADER_BYTES_MAX", 16_384, 1024, 1024 * 1024),
        headers_count_max=_int(env, "IOU_HEADERS_MAX", 100, 10, 1000),
        header_timeout_s=_int(env, "IOU_HEADER_TIMEOUT_S", 10, 1, 600),
        body_timeout_s=_int(env, "IOU_BODY_TIMEOUT_S", 30, 1, 3600),
        keepalive_timeout_s=_int(env, "IOU_KEEPALIVE_TIMEOUT_S", 5, 1, 3600),
        connections_max=_int(env, "IOU_CONNECTIONS_MAX", 1000, 8, 1_000_000),
        metrics_dir=Path(env[METRICS_DIR_VARIABLE]) if env.get(METRICS_DIR_VARIABLE) else None,
        log_format=_choice(env, "IOU_LOG_FORMAT", ("text", "json")) or "text",
        receipt_keys=receipt_seeds(env.get("IOU_RECEIPT_KEY") or "", "IOU_RECEIPT_KEY"),
        embedded_attach=env.get(EMBEDDED_ATTACH_VARIABLE) == "1",
    )
    return settings


@dataclass(frozen=True)
class ClientSettings:
    """What the `iou` client commands need: where the gateway is and the admin token."""

    url: str
    admin_token: str | None
    data_dir: Path


def hand_down_metrics_dir(folder: Path) -> None:
    """Make the workers that this process starts from now on share their metrics through
    ``folder`` (they inherit the environment; prometheus_client reads it at import)."""
    os.environ[METRICS_DIR_VARIABLE] = str(folder)


def hand_down_embedded_attach() -> None:
    """Make the workers and the writer that this process starts from now on use its
    embedded server without ever starting one (it is this process's to start again)."""
    os.environ[EMBEDDED_ATTACH_VARIABLE] = "1"


def load_client_settings(environ: Mapping[str, str] | None = None) -> ClientSettings:
    env = os.environ if environ is None else environ
    url = env.get("IOU_URL") or "http://127.0.0.1:8080"
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"IOU_URL={url!r}: must start with http:// or https://")
    return ClientSettings(url.rstrip("/"), env.get("IOU_ADMIN_TOKEN") or None,
                          Path(env.get("IOU_DATA_DIR") or "./.iou"))


def _amount(env: Mapping[str, str], name: str, default: str, max_micros: int, zero: bool) -> int:
    raw = env.get(name) or default
    try:
        return money.parse_amount(raw, allow_zero=zero, max_micros=max_micros)
    except money.AmountError as exc:
        raise ConfigError(f"{name}={raw!r}: {exc.reason}") from None


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    if not raw.isascii() or not raw.isdigit():
        raise ConfigError(f"{name}={raw!r}: must be a whole number")
    value = int(raw)
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw!r}: must be between {low} and {high}")
    return value


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    raw = env.get(name)
    if not raw:
        return None
    if raw not in allowed:
        raise ConfigError(f"{name}={raw!r}: must be one of {', '.join(allowed)}")
    return raw


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in {"", "0", "false", "no"}:
        return False
    if raw in {"1", "true", "yes"}:
        return True
    raise ConfigError(f"{name}={raw!r}: must be 1/true/yes or 0/false/no")


def _redis_url(env: Mapping[str, str]) -> str | None:
    raw = env.get("IOU_REDIS_URL")
    if not raw:
        return None
    schemes = ("redis://", "rediss://", "unix://", "redis+cluster://")
    if not raw.startswith(schemes):
        raise ConfigError(f"IOU_REDIS_URL={raw!r}: must start with one of {', '.join(schemes)}")
    problem = _redis_url_problem(raw)
    if problem:
        # The value is not echoed: it may hold the Redis password.
        raise ConfigError(f"IOU_REDIS_URL: {problem}")
    return raw


def _redis_url_problem(raw: str) -> str | None:
    """What makes a Redis URL unusable (None when nothing): checked here so that start-up
    stops with one line instead of a traceback from the connection code."""
    try:
        parts = urlsplit(raw)
        port = parts.port  # a port that is no number or out of range raises here
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme == "unix":
        db = parse_qs(parts.query).get("db", ["0"])[0]
        if not parts.path:
            return "unix:// needs the socket's path (unix:///path/to/redis.sock)"
    else:
        db = parts.path.lstrip("/") or "0"
        if port == 0:
            return "the port must be 1 to 65535"
    if not db.isascii() or not db.isdigit():
        return f"the database must be a number, not {db!r}"
    return None


def _ledger_url(env: Mapping[str, str]) -> str | None:
    raw = env.get("IOU_LEDGER_URL")
    if not raw:
        return None
    if not raw.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ConfigError(
            f"IOU_LEDGER_URL={raw!r}: must be sqlite:///path or postgresql://user@host/db"
        )
    if raw.startswith("sqlite:///"):
        if not raw[len("sqlite:///"):]:
            raise ConfigError("IOU_LEDGER_URL: sqlite:/// needs the file's path "
                              "(sqlite:///path/to/ledger.db)")
        return raw
    try:
        port = urlsplit(raw).port  # a port that is no number or out of range raises here
    except ValueError as exc:
        # The value is not echoed: it may hold the database password.
        raise ConfigError(f"IOU_LEDGER_URL: not a valid URL ({exc})") from None
    if port == 0:
        raise ConfigError("IOU_LEDGER_URL: the port must be 1 to 65535")
    return raw


def _optional_secret(env: Mapping[str, str], name: str, chars_min: int = 16) -> str | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) < chars_min:
        raise ConfigError(f"{name}: must be at least {chars_min} characters long")
    return raw


def _networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated addresses or CIDR networks, normalised (``10.0.0.0/8``)."""
    raw = env.get(name) or ""
    networks = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ConfigError(f"{name}={raw!r}: {item!r} is not an address or network") from None
    return tuple(networks)


RECEIPT_SEED_BYTES = 32  # an Ed25519 private key (RFC 8032 seed)


def receipt_seeds(raw: str, name: str) -> tuple[str, ...]:
    """Base64url Ed25519 seeds separated by commas or whitespace (the first signs)."""
    seeds = tuple(part for part in re.split(r"[\s,]+", raw.strip()) if part)
    for seed in seeds:
        try:
            decoded = base64.urlsafe_b64decode(seed + "=" * (-len(seed) % 4))
        except (ValueError, binascii.Error):
            decoded = b""
        if len(decoded) != RECEIPT_SEED_BYTES:
            raise ConfigError(f"{name}: each key must be {RECEIPT_SEED_BYTES} random bytes in "
                              "base64url (43 characters)")
    return seeds
