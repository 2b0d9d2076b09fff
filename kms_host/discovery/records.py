"""The ``_vlmcs._tcp`` SRV record written for the DNS servers labs actually run.

``kms-host dns-record`` prints these so an operator can paste the record where dynamic update
is not possible (kms-host-behaviour 2.4, "Manual record for BIND-style servers"; spec 9.1).
Every form carries priority, weight and port: the record is malformed without them, which
is the mistake in the vlmcsd(7) example (spec 9.1).

- zone file (RFC 1035 5.1, RFC 2782): ``_vlmcs._tcp.<zone>. TTL IN SRV prio weight port target.``
- dnsmasq ``--srv-host=<_service>.<_prot>.<domain>,<target>,<port>,<priority>,<weight>``
  (dnsmasq(8); it has no per-record TTL);
- unbound ``local-data:`` taking the same RR text in quotes (unbound.conf(5));
- Windows DNS: ``Add-DnsServerResourceRecord -Srv`` with ``-Name`` relative to
  ``-ZoneName``, ``-DomainName`` the target, and ``-TimeToLive`` as a TimeSpan.
"""

from __future__ import annotations

from kms_host.discovery.settings import KMS_PORT, parse_dns_name
from kms_host.discovery.zone import SRV_SERVICE

__all__ = ["format_records"]


def format_records(
    zone: str,
    target: str | None = None,
    *,
    port: int = KMS_PORT,
    priority: int = 0,
    weight: int = 0,
    ttl: int = 3600,
) -> dict[str, str]:
    """The record as ``zone_file``, ``dnsmasq``, ``unbound`` and ``powershell`` lines.

    ``target`` defaults to ``kms.<zone>``, the name the responder gives itself. Raises
    ValueError for a bad name or a number out of range (port 1..65535, priority and weight
    0..65535, TTL 0..2147483647 as RFC 2181 8 allows).
    """
    zone = parse_dns_name(zone)
    target = parse_dns_name(target) if target is not None else f"kms.{zone}"
    for label, value, low, high in (
        ("port", port, 1, 65535),
        ("priority", priority, 0, 65535),
        ("weight", weight, 0, 65535),
        ("ttl", ttl, 0, 2147483647),
    ):
        if not low <= value <= high:
            raise ValueError(f"{label} must be from {low} to {high}, got {value}")
    owner = f"{SRV_SERVICE}.{zone}"
    rr = f"{owner}. {ttl} IN SRV {priority} {weight} {port} {target}."
    return {
        "zone_file": rr,
        "dnsmasq": f"srv-host={owner},{target},{port},{priority},{weight}",
        "unbound": f'local-data: "{rr}"',
        "powershell": (
            f'Add-DnsServerResourceRecord -Srv -ZoneName "{zone}" -Name "{SRV_SERVICE}"'
            f' -DomainName "{target}" -Priority {priority} -Weight {weight} -Port {port}'
            f" -TimeToLive {_timespan(ttl)}"
        ),
    }


def _timespan(seconds: int) -> str:
    """A .NET TimeSpan literal: ``hh:mm:ss``, or ``d.hh:mm:ss`` from one day on."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    clock = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{days}.{clock}" if days else clock
