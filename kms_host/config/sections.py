"""The daemon's settings: one frozen dataclass per TOML section, each field with its converter.

Each field declares its default and its converter in one place (:func:`_option`), so the
loader (:mod:`kms_host.config.loading`) is a loop over that table rather than a ladder of
checks, and a bad value names its dotted key.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from kms_host.addresses import ANY_PEER, LAB_NETWORKS, ListenAddress, parse_listen, parse_network
from kms_host.converters import boolean, integer, number
from kms_host.discovery.settings import DnsConfig
from kms_host.loop import EVENT_LOOPS
from kms_host.policy.scenario import ScenarioRule

__all__ = [
    "ClockConfig",
    "Config",
    "CountingConfig",
    "CountingMode",
    "HostConfig",
    "LogConfig",
    "MetricsConfig",
    "PolicyConfig",
    "Prefill",
    "ServerConfig",
    "StorageConfig",
    "WebConfig",
]

_T = TypeVar("_T")
_Converter = Callable[[object], _T]


# --- converters: raw TOML/env/CLI value -> typed field value, ValueError saying why not -----


def _one_of(*choices: _T) -> _Converter[_T]:
    def convert(value: object) -> _T:
        for choice in choices:
            if type(value) is type(choice) and value == choice:
                return choice
        listed = ", ".join(repr(choice) for choice in choices)
        raise ValueError(f"must be one of {listed}, got {value!r}")

    return convert


_E = TypeVar("_E", bound=enum.StrEnum)


def _member_of(kind: type[_E]) -> _Converter[_E]:
    def convert(value: object) -> _E:
        if isinstance(value, str) and value in {member.value for member in kind}:
            return kind(value)
        listed = ", ".join(repr(member.value) for member in kind)
        raise ValueError(f"must be one of {listed}, got {value!r}")

    return convert


def _hex_or_empty(digits: int) -> _Converter[str]:
    pattern = re.compile(f"(?:[0-9A-Fa-f]{{{digits}}})?")

    def convert(value: object) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ValueError(f"expected {digits} hex digits or an empty string, got {value!r}")
        return value

    return convert


def _names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"expected a non-empty list of names, got {value!r}")
    if not all(isinstance(name, str) and name.strip() for name in value):
        raise ValueError(f"every name must be a non-empty string, got {value!r}")
    return tuple(name.strip() for name in value)


def _listen_list(value: object) -> tuple[ListenAddress, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of 'HOST:PORT' strings, got {value!r}")
    if not all(isinstance(item, str) for item in value):
        raise ValueError(f"every address must be a 'HOST:PORT' string, got {value!r}")
    return tuple(parse_listen(item) for item in value)


def _networks(*, allow_any: bool, allow_empty: bool) -> _Converter[tuple[str, ...]]:
    """A list of CIDR blocks, kept as their normalised text (JSON-safe for the config log)."""

    def convert(value: object) -> tuple[str, ...]:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ValueError(f'expected a list of CIDR strings such as "10.0.0.0/8", got {value!r}')
        if not value and not allow_empty:
            raise ValueError(f'an empty list would refuse every peer; for all, give ["{ANY_PEER}"]')
        if allow_any and ANY_PEER in value:
            if len(value) > 1:
                raise ValueError(f'"{ANY_PEER}" lets every peer in: give it alone, got {value!r}')
            return (ANY_PEER,)
        return tuple(str(parse_network(item)) for item in value)

    return convert


def _string_table(value: object) -> Mapping[str, str]:
    if not isinstance(value, dict):
        raise ValueError(f'expected a table of name = "string", got {value!r}')
    for name, text in value.items():
        if not isinstance(text, str) or not text:
            raise ValueError(f"entry {name!r} must be a non-empty string, got {text!r}")
    return MappingProxyType(dict(value))


def _path(value: object) -> Path:
    if not isinstance(value, str | Path) or not str(value):
        raise ValueError(f"expected a non-empty path, got {value!r}")
    return Path(value)


# --- the sections ----------------------------------------------------------------------------


def _option(default: _T, convert: _Converter[_T]) -> _T:
    """Declare a field with its default and the converter every layer's value goes through.

    (ruff's RUF009 cannot tell that this returns a ``field()``; where it flags a use, the
    default is immutable: an enum member or a ``Path``.)
    """
    if isinstance(default, Mapping):
        frozen = MappingProxyType(dict(default))
        return field(default_factory=lambda: frozen, metadata={"convert": convert})  # type: ignore[return-value]
    return field(default=default, metadata={"convert": convert})


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """``[server]``: where the daemon listens and the bounds it keeps on connections."""

    listen: tuple[ListenAddress, ...] = _option((), _listen_list)
    """Addresses as "HOST:PORT" (IPv6 in brackets). Default empty: dual-stack ``[::]:1688``,
    falling back to ``0.0.0.0:1688`` where IPv6 is off."""
    idle_timeout_s: float = _option(30.0, number(1, 600))
    """Seconds a connection may stay silent before it is closed. Default 30; 1..600."""
    max_pdu_bytes: int = _option(4096, integer(1024, 65535))
    """Largest RPC PDU accepted, in bytes (a KMS request is under 1 KiB). Default 4096."""
    exchange_timeout_s: float = _option(30.0, number(1, 600))
    """Seconds a peer may take to send one whole PDU (a fragmented call counting as one),
    from its first byte; then the connection is closed. A peer trickling bytes keeps the
    idle timer from firing, not this one; a connection may still live on between whole
    messages (spec 1.1: clients reuse it). Default 30; 1..600."""
    max_connections: int = _option(1024, integer(1, 65536))
    """Open connections at once; more are refused. Default 1024; 1..65536."""
    allow: tuple[str, ...] = _option(LAB_NETWORKS, _networks(allow_any=True, allow_empty=False))
    """Peers served, as CIDR blocks; others are closed before a byte is read. Default:
    loopback, private, link-local and shared (100.64.0.0/10) ranges; ["any"] serves all."""
    proxy_protocol_from: tuple[str, ...] = _option((), _networks(allow_any=False, allow_empty=True))
    """Load balancers, as CIDR blocks, whose connections start with a PROXY protocol v2
    header naming the client; ``allow``, logs and the client table then see the client.
    Default []: none, every peer is a client."""
    refused_log_interval_s: float = _option(60.0, number(1, 86400))
    """Seconds between ``connection_refused`` lines for one peer refused by ``allow``;
    the refusals between are counted in the next line's ``suppressed``. Default 60."""
    max_connections_per_peer: int = _option(0, integer(0, 65536))
    """Open connections one peer (an IPv4 address, an IPv6 /64) may hold; more are closed at
    accept. Default 0: off (a NAT'd farm is one peer); 0..65536."""
    peer_connection_rate_per_s: float = _option(0.0, number(0, 100_000))
    """New connections per second one peer may open, after ``peer_connection_burst``; more
    are closed at accept. Default 0: off; 0..100000."""
    peer_connection_burst: int = _option(100, integer(1, 1_000_000))
    """Connections one peer may open at once before ``peer_connection_rate_per_s`` applies.
    Default 100; 1..1000000."""
    peer_request_rate_per_s: float = _option(0.0, number(0, 100_000))
    """Activation calls per second one peer may make, after ``peer_request_burst``; more get
    the RPC fault nca_s_server_too_busy (the call did not run). Default 0: off; 0..100000."""
    peer_request_burst: int = _option(100, integer(1, 1_000_000))
    """Calls one peer may make at once before ``peer_request_rate_per_s`` applies.
    Default 100; 1..1000000."""
    shutdown_grace_s: float = _option(5.0, number(0, 300))
    """Seconds calls in flight get to finish on SIGTERM before they are cancelled. Default 5."""
    ndr64: bool = _option(True, boolean)
    """Accept the NDR64 transfer syntax at BIND, as Windows Vista+ hosts do. Default true."""
    btfn: bool = _option(True, boolean)
    """Acknowledge bind-time feature negotiation (BTFN), as Windows 7+ hosts do. Default true."""
    event_loop: str = _option("auto", _one_of(*EVENT_LOOPS))
    """The asyncio event loop: "auto" (uvloop if installed, else the standard one),
    "asyncio", or "uvloop" (which must be installed: ``kms-host[uvloop]``). Default "auto"."""
    workers: int = _option(1, integer(1, 64))
    """Processes answering calls, sharing the listen addresses (SO_REUSEPORT) and the data dir;
    above 1 a supervising parent starts and watches them. Default 1: one process; 1..64."""


@dataclass(frozen=True, slots=True)
class HostConfig:
    """``[host]``: which host keys this host holds and how it identifies itself."""

    scope: tuple[str, ...] = _option(("all",), _names)
    """Host-key group names held; "all" = every group in the catalog. Default ["all"]."""
    epid: Mapping[str, str] = _option({}, _string_table)
    """Fixed ePIDs by host-key group; groups not listed get one generated on first start
    and kept in the data dir. Default {} (all generated)."""
    hwid: str = _option("", _hex_or_empty(16))
    """Host hardware ID as 16 hex digits (8 bytes, V6). Default "": generated and kept."""
    activation_interval_min: int = _option(120, integer(15, 43200))
    """Minutes an unactivated client waits before retrying. Default 120; 15..43200."""
    renewal_interval_min: int = _option(10080, integer(15, 43200))
    """Minutes an activated client waits before renewing. Default 10080 (7 days); 15..43200."""
    build: int = _option(17763, _one_of(6002, 7601, 9200, 9600, 14393, 17763, 20348, 26100))
    """Host OS build written into generated ePIDs. Default 17763 (Windows Server 2019)."""
    lcid: int = _option(1033, integer(1, 65535))
    """Locale ID written into generated ePIDs. Default 1033 (en-US)."""


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """``[policy]``: how strictly requests are judged."""

    refuse_unknown: bool = _option(False, boolean)
    """Refuse KMS counted IDs the catalog lacks (0xC004F042). Default false: accept and log."""
    strict_sku: bool = _option(False, boolean)
    """Refuse a SKU the catalog puts in another group than claimed (0xC004F042). Default false."""
    check_client_time: bool = _option(True, boolean)
    """Refuse clients whose clock is off by more than ``clock_skew_max_s``. Default true."""
    clock_skew_max_s: int = _option(14400, integer(60, 31536000))
    """Largest accepted client clock offset, in seconds. Default 14400 (4 hours)."""
    max_required_client_count: int = _option(1000, integer(1, 1000000))
    """Largest RequiredClientCount accepted; above it 0x8007000D. Default 1000."""
    verify_v4_mac: bool = _option(True, boolean)
    """Check the V4 request's hash and refuse a mismatch (0x8007000D). Default true."""


class CountingMode(enum.StrEnum):
    """Which count the host reports (``[counting] mode``)."""

    FAITHFUL = "faithful"
    SATURATED = "saturated"
    FIXED = "fixed"


class Prefill(enum.StrEnum):
    """Whether synthetic clients fill the count up to the threshold (``[counting] prefill``)."""

    THRESHOLD = "threshold"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class CountingConfig:
    """``[counting]``: which client count the host reports (kms-host-behaviour 2.1)."""

    mode: CountingMode = _option(CountingMode.FAITHFUL, _member_of(CountingMode))  # noqa: RUF009
    """"faithful": distinct CMIDs in the window, capped at twice the threshold; "saturated":
    always twice the threshold; "fixed": always ``fixed_count``. Default "faithful"."""
    fixed_count: int = _option(50, integer(0, 100000))
    """The count reported in "fixed" mode. Default 50."""
    prefill: Prefill = _option(Prefill.THRESHOLD, _member_of(Prefill))  # noqa: RUF009
    """"threshold": synthetic clients so the first real one sees the threshold; "none": an
    empty host. Default "threshold"."""
    window_days: int = _option(30, integer(1, 3650))
    """Days a CMID keeps counting after its last activation. Default 30."""


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """``[storage]``: where the client table and the host identity are kept."""

    backend: str = _option("sqlite", _one_of("sqlite"))
    """Client table backend; only "sqlite" for now. Default "sqlite"."""
    data_dir: Path = _option(Path("data"), _path)  # noqa: RUF009
    """Directory for the database and host identity, relative to the working directory
    (not to the config file). Default "./data"."""
    synchronous: str = _option("full", _one_of("full", "normal"))
    """SQLite durability: "full" survives power loss, "normal" only process crashes.
    Default "full"."""
    commit_delay_ms: float = _option(5.0, number(0, 100))
    """Longest wait, in milliseconds, for more activations to join a grouped commit while
    the host is busy with other requests; it never waits while the host is idle, and every
    answer still waits for its own commit. Larger commits cost less CPU per activation
    under load. 0 turns it off. Default 5."""


@dataclass(frozen=True, slots=True)
class LogConfig:
    """``[log]``: how log lines are written (always to stdout)."""

    format: str = _option("auto", _one_of("auto", "json", "console"))
    """"json" lines, "console" text, or "auto": console on a terminal, else JSON."""
    level: str = _option("info", _one_of("debug", "info", "warning", "error"))
    """Lowest level written. Default "info"."""


def _listen_or_empty(value: object) -> ListenAddress | None:
    if value in ("", None):
        return None
    if not isinstance(value, str):
        raise ValueError(f'expected "HOST:PORT" or "", not {value!r}')
    return parse_listen(value)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """``[metrics]``: the Prometheus endpoint."""

    listen: ListenAddress | None = _option(None, _listen_or_empty)  # noqa: RUF009
    """"HOST:PORT" serving /metrics in the Prometheus text format, e.g. "127.0.0.1:9688".
    Default "": off."""


def _token(value: object) -> str:
    if not isinstance(value, str) or (value and not 16 <= len(value) <= 256):
        raise ValueError("expected a bearer token of 16 to 256 characters, or an empty string")
    if not value.isascii() or not value.isprintable() or " " in value:
        raise ValueError("the token must be printable ASCII without spaces")
    return value


@dataclass(frozen=True, slots=True)
class WebConfig:
    """``[web]``: the read-only dashboard and JSON API (:mod:`kms_host.web`)."""

    listen: ListenAddress | None = _option(None, _listen_or_empty)  # noqa: RUF009
    """"HOST:PORT" serving the dashboard at / and the API under /api/, e.g.
    "127.0.0.1:8688". Default "": off."""
    token: str = _option("", _token)
    """Bearer token every request must carry (``Authorization: Bearer TOKEN``, or
    ``?token=TOKEN`` for the page); 16 to 256 characters. Default "": no token."""
    allow_public: bool = _option(False, boolean)
    """Listen on a non-loopback address without a token. Default false: refused, since the
    client table names machines and addresses."""


@dataclass(frozen=True, slots=True)
class ClockConfig:
    """``[clock]``: the host's notion of time, for lab scenarios."""

    offset_s: float = _option(0.0, number(-315_360_000, 315_360_000))
    """Seconds added to the machine's UTC clock (negative: behind); moves clock-skew checks
    and the 30-day window. Default 0; at most 10 years either way."""


@dataclass(frozen=True, slots=True)
class Config:
    """The effective configuration, resolved once at start."""

    server: ServerConfig = field(default_factory=ServerConfig)
    host: HostConfig = field(default_factory=HostConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    counting: CountingConfig = field(default_factory=CountingConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    web: WebConfig = field(default_factory=WebConfig)
    clock: ClockConfig = field(default_factory=ClockConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    scenario: tuple[ScenarioRule, ...] = ()
    """``[[scenario]]`` rules (:mod:`kms_host.policy.scenario`), first match wins; SIGHUP
    reloads them."""
    source: Path | None = field(default=None, compare=False)
    """The file these settings came from (SIGHUP re-reads its rules); not itself a setting."""
    explicit: frozenset[str] = field(default=frozenset(), compare=False)
    """The dotted keys a layer set (the file, ``KMS_HOST_*``, a flag), the rest being
    defaults: ``status`` and ``clients`` let these win over a running daemon's settings."""

    def as_dict(self) -> dict[str, object]:
        """The effective settings as JSON-safe data, for the one ``config`` log line.

        Secrets (the TSIG key) are redacted: this line goes to every log collector.
        """
        settings: dict[str, object] = {
            section.name: _jsonable(getattr(self, section.name))
            for section in dataclasses.fields(self)
            if section.name not in ("scenario", "source", "explicit")
        }
        if self.scenario:  # a list of rules, unlike the sections: shown only when there are any
            settings["scenario"] = _jsonable(self.scenario)
        return settings


_SECRETS = frozenset({"tsig_secret", "token"})


def _jsonable(value: object) -> object:
    if isinstance(value, ListenAddress | Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            option.name: "***"
            if option.name in _SECRETS and getattr(value, option.name)
            else _jsonable(getattr(value, option.name))
            for option in dataclasses.fields(value)
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, Mapping):
        return dict(value)
    return value
