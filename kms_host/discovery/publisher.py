"""Registering the SRV record in a real DNS server by RFC 2136 dynamic update.

A genuine KMS host registers ``_vlmcs._tcp.<domain> SRV 0 0 1688 <FQDN>`` when it starts and
every 24 hours after, logging event 12294 on success and 12293 with an HRESULT on failure
(kms-host-behaviour 2.4 and 2.6). :func:`run_publisher` does the same and logs
``dns_published`` / ``dns_publish_failed`` with the events' fields (``event_id``,
``dns_domain``, ``hresult``); on a clean stop it can withdraw what it added.

Updates add and delete individual RRs, never whole RRsets (RFC 2136 2.5.1 and 2.5.4): other
hosts' records at the same name stay, as when several genuine hosts share one domain. In-zone
targets that have addresses get their A/AAAA records too, since a lab host usually has no
other registration. Updates go over TCP, optionally TSIG-signed (RFC 8945).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Sequence

import dns.asyncquery
import dns.exception
import dns.name
import dns.rcode
import dns.tsig
import dns.tsigkeyring
import dns.update
import structlog

from kms_host.discovery.records import format_records
from kms_host.discovery.settings import DnsPublishConfig, SrvTarget
from kms_host.discovery.srv_lookup import hresult_for_rcode
from kms_host.discovery.zone import SRV_SERVICE
from kms_host.errors import KmsHostError

__all__ = ["DnsPublishError", "publish", "run_publisher", "withdraw"]

log = structlog.get_logger("kms_host.dns_publish")

_E_FAIL = 0x80004005
_HRESULT_TIMEOUT = 0x800705B4  # HRESULT_FROM_WIN32(ERROR_TIMEOUT)
_HRESULT_CONNECTION_REFUSED = 0x8007274D  # HRESULT_FROM_WIN32(WSAECONNREFUSED)
# The peer's TSIG verdict as the error code it stands for (RFC 8945 section 3). Named here
# because 16 is both BADSIG and BADVERS, and dnspython's enum calls it BADVERS.
_TSIG_ERRORS: dict[type[dns.exception.DNSException], tuple[int, str]] = {
    dns.tsig.PeerBadSignature: (dns.rcode.BADSIG, "BADSIG"),
    dns.tsig.PeerBadKey: (dns.rcode.BADKEY, "BADKEY"),
    dns.tsig.PeerBadTime: (dns.rcode.BADTIME, "BADTIME"),
}


class DnsPublishError(KmsHostError):
    """An update failed; ``hresult`` as in event 12293, ``rcode`` when the server said no."""

    def __init__(self, reason: str, *, hresult: int, rcode: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.hresult = hresult
        self.rcode = rcode


def _build_update(
    config: DnsPublishConfig, targets: Sequence[SrvTarget], *, delete: bool
) -> dns.update.UpdateMessage:
    """The UPDATE message adding (or deleting) each SRV record and in-zone A/AAAA record."""
    zone = dns.name.from_text(config.zone)
    keyring = None
    if config.tsig_key_name:
        keyring = dns.tsigkeyring.from_text(
            {config.tsig_key_name: (config.tsig_algorithm, config.tsig_secret)}
        )
    update = dns.update.UpdateMessage(zone, keyring=keyring)
    owner = dns.name.from_text(SRV_SERVICE, zone)
    records = [(owner, "SRV", f"{t.priority} {t.weight} {t.port} {t.target}.") for t in targets]
    for target in targets:
        name = dns.name.from_text(target.target)
        if name.is_subdomain(zone):
            records.extend(
                (name, "A" if ipaddress.ip_address(a).version == 4 else "AAAA", a)
                for a in target.addresses
            )
    for name, rdtype, text in records:
        if delete:
            update.delete(name, rdtype, text)
        else:
            update.add(name, config.ttl_s, rdtype, text)
    return update


async def publish(config: DnsPublishConfig, targets: Sequence[SrvTarget]) -> None:
    """Add the records; raises :class:`DnsPublishError` unless the server says NOERROR."""
    await _send(config, _build_update(config, targets, delete=False))


async def withdraw(config: DnsPublishConfig, targets: Sequence[SrvTarget]) -> None:
    """Delete exactly the records :func:`publish` adds (RFC 2136 2.5.4)."""
    await _send(config, _build_update(config, targets, delete=True))


async def _send(config: DnsPublishConfig, update: dns.update.UpdateMessage) -> None:
    host, port = config.server
    try:
        response = await dns.asyncquery.tcp(update, host, timeout=config.timeout_s, port=port)
    except dns.exception.Timeout:
        raise DnsPublishError("no answer in time", hresult=_HRESULT_TIMEOUT) from None
    except ConnectionRefusedError:
        raise DnsPublishError("connection refused", hresult=_HRESULT_CONNECTION_REFUSED) from None
    except (OSError, EOFError) as exc:
        raise DnsPublishError(str(exc) or type(exc).__name__, hresult=_E_FAIL) from None
    except dns.exception.DNSException as exc:
        code, name = _TSIG_ERRORS.get(type(exc), (dns.rcode.SERVFAIL, "SERVFAIL"))
        raise DnsPublishError(
            f"bad answer: {exc}", hresult=hresult_for_rcode(code), rcode=name
        ) from None
    if response.rcode() != dns.rcode.NOERROR:
        rcode = response.rcode()
        raise DnsPublishError(
            f"the server answered {rcode.name}", hresult=hresult_for_rcode(rcode), rcode=rcode.name
        )


async def run_publisher(
    config: DnsPublishConfig, targets: Sequence[SrvTarget], *, stop: asyncio.Event
) -> None:
    """Publish now and every ``interval_s`` (``retry_s`` after a failure) until ``stop``.

    Then, if configured and anything was published, withdraw it, bounded by ``timeout_s``.
    Cancelling the task instead of setting ``stop`` skips the withdrawal.
    """
    server = f"{config.server[0]}:{config.server[1]}"
    published = False
    while not stop.is_set():
        try:
            await publish(config, targets)
        except DnsPublishError as exc:
            _log_failure("dns_publish_failed", config, server, exc, event_id=12293)
            delay = config.retry_s
        else:
            published = True
            delay = config.interval_s
            for target in targets:
                record = format_records(
                    config.zone,
                    target.target,
                    port=target.port,
                    priority=target.priority,
                    weight=target.weight,
                    ttl=config.ttl_s,
                )["zone_file"]
                log.info(
                    "dns_published",
                    event_id=12294,
                    dns_domain=config.zone,
                    record=record,
                    server=server,
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
    if not (published and config.withdraw_on_stop):
        return
    try:
        await withdraw(config, targets)
    except DnsPublishError as exc:
        _log_failure("dns_withdraw_failed", config, server, exc)
    else:
        log.info("dns_withdrawn", dns_domain=config.zone, server=server)


def _log_failure(
    event: str, config: DnsPublishConfig, server: str, exc: DnsPublishError, **extra: object
) -> None:
    log.warning(
        event,
        **extra,
        hresult=f"0x{exc.hresult:08X}",
        rcode=exc.rcode,
        dns_domain=config.zone,
        reason=exc.reason,
        server=server,
    )
