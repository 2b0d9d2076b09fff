"""The ``[dns]`` configuration section: the SRV responder, its records, and RFC 2136 publishing.

A genuine KMS host publishes ``_vlmcs._tcp.<domain> SRV 0 0 1688 <its FQDN>`` to its DNS
server every 24 hours (kms-host-behaviour 2.4; spec 9.1). Labs often have no DNS they may
edit, so kms-host can also *be* the authoritative server for a small zone (``listen``), and/or
publish to a real one (``[dns.publish]``). Both are off by default.

The main loader hands the raw ``[dns]`` table to :func:`parse_dns_section`. As everywhere in
the config (architecture 4.6), unknown keys and bad values are errors naming the dotted key,
so a typo stops the start instead of silently disabling discovery.

Example::

    [dns]
    listen = ["127.0.0.1:5353"]
    zone = "lab.example"
    [[dns.srv]]
    target = "kms1.lab.example"
    addresses = ["192.0.2.10"]
    [dns.publish]
    server = "192.0.2.53:53"
    tsig_key_name = "kms-host"
    tsig_secret = "base64=="
"""

from __future__ import annotations

import binascii
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from kms_host import addresses
from kms_host.converters import boolean, integer, number
from kms_host.errors import ConfigError

__all__ = [
    "KMS_PORT",
    "TSIG_ALGORITHMS",
    "DnsConfig",
    "DnsPublishConfig",
    "SrvTarget",
    "parse_dns_name",
    "parse_dns_section",
    "parse_host_port",
]

KMS_PORT = 1688
"""The port a genuine host registers and clients try (spec 9.1)."""

TSIG_ALGORITHMS = (
    "hmac-md5",
    "hmac-sha1",
    "hmac-sha224",
    "hmac-sha256",
    "hmac-sha384",
    "hmac-sha512",
)
"""TSIG algorithms as BIND and dnspython name them (RFC 8945 section 6)."""

_T = TypeVar("_T")
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


@dataclass(frozen=True, slots=True)
class SrvTarget:
    """One KMS host as an SRV record describes it (RFC 2782), plus its addresses.

    ``target`` is an absolute name without the trailing dot. ``addresses`` become the A/AAAA
    records the responder serves (and the publisher registers) for ``target`` when it lies
    inside the zone.
    """

    target: str
    port: int = KMS_PORT
    priority: int = 0
    weight: int = 0
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DnsPublishConfig:
    """``[dns.publish]``: RFC 2136 dynamic updates to a real DNS server."""

    server: tuple[str, int]
    """The primary server to update, "IP:PORT" (an address: no resolver is involved)."""
    zone: str
    """The zone to update; defaults to ``dns.zone``."""
    tsig_key_name: str = ""
    """TSIG key name (RFC 8945); empty sends unsigned updates. Default ""."""
    tsig_algorithm: str = "hmac-sha256"
    """One of :data:`TSIG_ALGORITHMS`. Default "hmac-sha256"."""
    tsig_secret: str = field(default="", repr=False)
    """The key's base64 secret; kept out of ``repr`` so it never reaches a log line."""
    interval_s: float = 86400.0
    """Seconds between publications; a genuine host re-registers every 24 h. 60..31536000."""
    retry_s: float = 900.0
    """Seconds before another try after a failed publication. Default 900; 1..86400."""
    timeout_s: float = 5.0
    """Seconds one update may take, also bounding the withdrawal at stop. Default 5."""
    withdraw_on_stop: bool = True
    """Delete the published records on a clean stop. Default true."""
    ttl_s: int = 3600
    """TTL of the published records. Default 3600."""


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """``[dns]``: the authoritative SRV responder (off while ``listen`` is empty)."""

    listen: tuple[tuple[str, int], ...] = ()
    """UDP and TCP addresses as "HOST:PORT" (IPv6 in brackets). Default empty: off."""
    zone: str = ""
    """The zone served, e.g. "lab.example"; required when ``listen`` or publishing is set."""
    srv: tuple[SrvTarget, ...] = ()
    """``[[dns.srv]]`` entries; empty means the host describes itself (``kms.<zone>``)."""
    ttl_s: int = 3600
    """TTL of every record served, and the negative-caching TTL (RFC 2308). Default 3600."""
    rate_limit_qps: float = 20.0
    """Queries per second one source address may send; more are dropped. Default 20."""
    rate_limit_burst: int = 40
    """Queries a source may send at once before the rate applies. Default 40."""
    tcp_idle_timeout_s: float = 10.0
    """Seconds a DNS-over-TCP connection may stay silent (RFC 7766 section 6.2.3). Default 10."""
    publish: DnsPublishConfig | None = None
    """``[dns.publish]``, or None when the table is absent (no publishing)."""

    @property
    def enabled(self) -> bool:
        """Whether the responder runs: it does as soon as it has an address to listen on."""
        return bool(self.listen)


# --- value parsers: each raises ValueError saying why ------------------------------------


def parse_host_port(text: str, *, min_port: int = 0) -> tuple[str, int]:
    """Parse "HOST:PORT" ("[v6]:PORT" for IPv6) whose host is an IP address or a DNS name."""
    return addresses.parse_host_port(
        text, check_host=_ip_or_dns_name, min_port=min_port, example="[::1]:53"
    )


def _ip_or_dns_name(host: str) -> None:
    if _ip_or_none(host) is None:
        parse_dns_name(host)


def parse_dns_name(text: str) -> str:
    """Check a host or zone name (RFC 1035 2.3.4 lengths; '_' allowed as in SRV owners).

    Returns it lowercased and without a trailing dot: names compare case-insensitively
    (RFC 4343) and every name in this section is absolute.
    """
    name = text.strip().rstrip(".") if text.strip() != "." else ""
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"expected a domain name such as 'lab.example', got {text!r}")
    return name.lower()


def _ip_or_none(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _name(value: object) -> str:
    return parse_dns_name(_string(value))


def _name_or_empty(value: object) -> str:
    """A zone name, or "" for "not set" (the shipped config shows the key with that value)."""
    return "" if value == "" else _name(value)


def _address(value: object) -> str:
    ip = _ip_or_none(_string(value))
    if ip is None:
        raise ValueError(f"expected an IPv4 or IPv6 address, got {value!r}")
    return str(ip)


def _listen_address(value: object) -> tuple[str, int]:
    return parse_host_port(_string(value))


def _server(value: object) -> tuple[str, int]:
    host, port = parse_host_port(_string(value), min_port=1)
    if _ip_or_none(host) is None:
        raise ValueError(f"the update server must be an IP address, got {value!r}")
    return host, port


def _base64(value: object) -> str:
    try:
        binascii.a2b_base64(_string(value).encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("expected a base64 secret (as in BIND's key statement)") from None
    return _string(value)


def _algorithm(value: object) -> str:
    if value not in TSIG_ALGORITHMS:
        raise ValueError(f"must be one of {', '.join(TSIG_ALGORITHMS)}, got {value!r}")
    return str(value)


# --- the section -------------------------------------------------------------------------


class _Table:
    """One TOML table being read: takes known keys, converts them, then rejects the rest."""

    def __init__(self, raw: object, key: str) -> None:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"expected a table, got {raw!r}", key=key)
        self.raw: Mapping[object, object] = raw
        self.key = key
        self.used: set[object] = set()

    def get(self, name: str, convert: Callable[[object], _T], default: _T) -> _T:
        self.used.add(name)
        if name not in self.raw:
            return default
        try:
            return convert(self.raw[name])
        except ValueError as exc:
            raise ConfigError(str(exc), key=f"{self.key}.{name}") from None

    def items(self, name: str) -> list[_Table]:
        self.used.add(name)
        value = self.raw.get(name, [])
        if not isinstance(value, list):
            raise ConfigError(f"expected [[{self.key}.{name}]] tables", key=f"{self.key}.{name}")
        return [_Table(item, f"{self.key}.{name}[{i}]") for i, item in enumerate(value)]

    def finish(self) -> None:
        for unknown in sorted(str(name) for name in set(self.raw) - self.used):
            raise ConfigError("unknown key", key=f"{self.key}.{unknown}")


def _srv_target(table: _Table) -> SrvTarget:
    target = table.get("target", _name, "")
    if not target:
        raise ConfigError("every [[dns.srv]] entry needs a target", key=f"{table.key}.target")
    entry = SrvTarget(
        target=target,
        port=table.get("port", integer(1, 65535), KMS_PORT),
        priority=table.get("priority", integer(0, 65535), 0),
        weight=table.get("weight", integer(0, 65535), 0),
        addresses=table.get("addresses", _list_of(_address), ()),
    )
    table.finish()
    return entry


def _list_of(convert: Callable[[object], _T]) -> Callable[[object], tuple[_T, ...]]:
    def convert_list(value: object) -> tuple[_T, ...]:
        if not isinstance(value, list | tuple):
            raise ValueError(f"expected a list, got {value!r}")
        return tuple(convert(item) for item in value)

    return convert_list


def _publish(table: _Table, default_zone: str) -> DnsPublishConfig:
    if "server" not in table.raw:
        raise ConfigError("required: the server to update, as IP:PORT", key=f"{table.key}.server")
    publish = DnsPublishConfig(
        server=table.get("server", _server, ("", 0)),
        zone=table.get("zone", _name, default_zone),
        tsig_key_name=table.get("tsig_key_name", _name, ""),
        tsig_algorithm=table.get("tsig_algorithm", _algorithm, "hmac-sha256"),
        tsig_secret=table.get("tsig_secret", _base64, ""),
        interval_s=table.get("interval_s", number(60, 31536000), 86400.0),
        retry_s=table.get("retry_s", number(1, 86400), 900.0),
        timeout_s=table.get("timeout_s", number(0.1, 120), 5.0),
        withdraw_on_stop=table.get("withdraw_on_stop", boolean, True),
        ttl_s=table.get("ttl_s", integer(0, 2147483647), 3600),
    )
    table.finish()
    if not publish.zone:
        raise ConfigError("set dns.publish.zone or dns.zone", key=f"{table.key}.zone")
    if bool(publish.tsig_key_name) != bool(publish.tsig_secret):
        missing = "tsig_secret" if publish.tsig_key_name else "tsig_key_name"
        raise ConfigError("tsig_key_name and tsig_secret go together", key=f"{table.key}.{missing}")
    return publish


def parse_dns_section(raw: Mapping[str, object]) -> DnsConfig:
    """Validate the raw ``[dns]`` table into a :class:`DnsConfig` (ConfigError on any fault)."""
    table = _Table(raw, "dns")
    listen: tuple[tuple[str, int], ...] = table.get("listen", _list_of(_listen_address), ())
    zone = table.get("zone", _name_or_empty, "")
    srv = tuple(_srv_target(entry) for entry in table.items("srv"))
    ttl_s = table.get("ttl_s", integer(0, 2147483647), 3600)
    qps = table.get("rate_limit_qps", number(0.01, 1e6), 20.0)
    burst = table.get("rate_limit_burst", integer(1, 1000000), 40)
    idle = table.get("tcp_idle_timeout_s", number(0.1, 600), 10.0)
    table.used.add("publish")
    publish = _publish(_Table(raw["publish"], "dns.publish"), zone) if "publish" in raw else None
    table.finish()
    if listen and not zone:
        raise ConfigError('required when dns.listen is set, e.g. "lab.example"', key="dns.zone")
    return DnsConfig(listen, zone, srv, ttl_s, qps, burst, idle, publish)
