"""``kms-host activate``: a strict KMS client that judges a host as a Windows client would.

The public emulators' clients exit 0 on most failures; this one does not.
Every response is verified with every check of spec 5.7 (:class:`kms_host.client.strict.KmsClient`)
before a line is printed, and each request is reported with the HRESULT a Windows client
would show: the host's own, 0xC004F038 when ``--require-activation`` finds the count below
the product's threshold (spec 7.2: that code is the client's), 0xC004F074 when no usable
answer came (spec 7.4). ``--discover DOMAIN`` finds the host by its ``_vlmcs._tcp`` SRV record
and fails over like a client (:mod:`kms_host.discovery.srv_lookup`).

Exit codes (with several requests, the code of the first that failed; all are still sent):

* 0: every request activated (with ``--require-activation``: at or above the threshold)
* 1: the host answered an HRESULT other than 0
* 2: usage: a bad option, an unknown or ambiguous product
* 3: ``--require-activation`` and a count below the threshold (0xC004F038)
* 4: a response failed verification (spec 5.7)
* 5: no usable answer: connect, bind, RPC fault, closed or timed out (0xC004F074)
* 6: discovery found no host: no SRV record (0x8007232B) or the DNS server failed

How a host's answer is judged lives in :mod:`kms_host.client.judgement`, shared with the
pytest plugin.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from kms_host.addresses import format_address
from kms_host.client.judgement import (
    EXIT_NO_HOST,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    EXIT_VERIFY,
    KMS_PORT,
    Outcome,
    Product,
    ProductError,
    build_client_request,
    choose_product,
    exchange,
    hex_code,
    unavailable,
)
from kms_host.client.strict import ClientError, KmsClient
from kms_host.discovery.settings import parse_host_port
from kms_host.discovery.srv_lookup import (
    DiscoveryError,
    NoHostAnsweredError,
    discover,
    first_answering,
)
from kms_host.logs import configure_logging
from kms_host.policy.catalog_file import load_catalog
from protocol.kms import (
    KmsRequest,
    LicenseStatus,
    ProtocolVersion,
)

__all__ = ["register"]

_LIST_LIMIT = 25

# --- the command -----------------------------------------------------------------------------


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``activate`` subcommand."""
    parser = commands.add_parser(
        "activate",
        help="activate like a strict KMS client and report what it would",
        description="Send KMS activation requests, verify every response as a strict client "
        "does (spec 5.7) and report what a Windows client would conclude.",
        epilog="exit codes: 0 activated; 1 host HRESULT; 2 usage; 3 count below threshold "
        "(--require-activation); 4 verification failed; 5 no usable answer (0xC004F074); "
        "6 discovery found no host",
    )
    parser.add_argument("target", nargs="?", metavar="TARGET", help="HOST[:PORT], port 1688")
    parser.add_argument("--discover", metavar="DOMAIN", help="find the host by DNS SRV instead")
    parser.add_argument("--dns-server", metavar="HOST:PORT", help="ask this DNS server (an IP)")
    what = parser.add_argument_group("product (default: Windows 10/11 Pro)")
    what.add_argument("--product", help="name, GVLK or GUID, searched in the catalog")
    what.add_argument("--app", type=uuid.UUID, help="override the ApplicationID")
    what.add_argument("--kms-id", type=uuid.UUID, help="override the KMS counted ID")
    what.add_argument("--sku", type=uuid.UUID, help="override the SKU (ActivationID)")
    how = parser.add_argument_group("request")
    how.add_argument("--protocol", type=int, choices=(4, 5, 6), help="default: the product's")
    how.add_argument("--ndr64", action=argparse.BooleanOptionalAction, default=True)
    how.add_argument("--btfn", action=argparse.BooleanOptionalAction, default=True)
    how.add_argument("--cmid", type=uuid.UUID, help="client machine ID (default: random)")
    how.add_argument("--machine-name", help="default: this machine's host name")
    how.add_argument(
        "--license-status",
        type=_license_status,
        default=LicenseStatus.INITIAL_GRACE.value,
        metavar="STATUS",
        help="0-6 or a name such as licensed (default: initial_grace)",
    )
    how.add_argument("--vm", action="store_true", help="claim to be a virtual machine")
    how.add_argument("--required-count", type=_at_least(0), help="default: the product's threshold")
    how.add_argument("--time", type=_iso_time, help="client clock, ISO 8601 (default: now)")
    runs = how.add_mutually_exclusive_group()
    runs.add_argument("-n", type=_at_least(1), default=1, metavar="N", help="send N requests")
    runs.add_argument("--charge", type=_at_least(1), metavar="N", help="send N distinct CMIDs")
    how.add_argument("--new-connection", action="store_true", help="one connection each")
    how.add_argument("--timeout", type=float, default=5.0, help="seconds per step (default 5)")
    how.add_argument(
        "--require-activation", action="store_true", help="a count below the threshold fails"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per request")
    parser.set_defaults(handler=_run)


def _at_least(low: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        if not text.isdigit() or int(text) < low:
            raise argparse.ArgumentTypeError(f"expected a whole number of at least {low}")
        return int(text)

    return convert


def _license_status(text: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        return LicenseStatus[text.upper().replace("-", "_")].value
    except KeyError:
        names = ", ".join(s.name.lower() for s in LicenseStatus)
        raise argparse.ArgumentTypeError(f"a number or one of {names}") from None


def _iso_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _target(text: str) -> tuple[str, int]:
    if text.count(":") > 1 and not text.startswith("["):  # a bare IPv6 address
        return text, KMS_PORT
    if (text.startswith("[") and text.endswith("]")) or ":" not in text:
        return text.strip("[]"), KMS_PORT
    return parse_host_port(text, min_port=1)


def _usage(message: str) -> int:
    print(f"kms-host activate: {message}", file=sys.stderr)
    return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    if (args.target is None) == (args.discover is None):
        return _usage("give either TARGET or --discover DOMAIN")
    if args.charge is not None and args.cmid is not None:
        return _usage("--charge sends distinct CMIDs; it excludes --cmid")
    try:
        hosts = [_target(args.target)] if args.target else []
        dns_server = parse_host_port(args.dns_server, min_port=1) if args.dns_server else None
        if dns_server:
            ipaddress.ip_address(dns_server[0])
        product = choose_product(
            load_catalog(), args.product, app=args.app, kms_id=args.kms_id, sku=args.sku
        )
    except ProductError as exc:
        code = _usage(f"{exc}; name one exactly or give --sku" if exc.candidates else str(exc))
        for name, sku in exc.candidates[:_LIST_LIMIT]:
            print(f"  {name}  (--sku {sku})", file=sys.stderr)
        if len(exc.candidates) > _LIST_LIMIT:
            print(f"  ... and {len(exc.candidates) - _LIST_LIMIT} more", file=sys.stderr)
        return code
    except ValueError as exc:
        return _usage(str(exc))
    configure_logging("auto", "warning", stream=sys.stderr)  # discovery's failover warnings
    return asyncio.run(_activate(args, product, hosts, dns_server))


async def _activate(
    args: argparse.Namespace,
    product: Product,
    hosts: list[tuple[str, int]],
    dns_server: tuple[str, int] | None,
) -> int:
    if args.discover:
        try:
            hosts = await discover(args.discover, dns_server=dns_server, timeout_s=args.timeout)
        except DiscoveryError as exc:
            _emit_discovery_failure(args, exc)
            return EXIT_NO_HOST
    exit_code = EXIT_OK
    client: KmsClient | None = None
    cmid = None if args.charge else (args.cmid or uuid.uuid4())  # -n: one machine, N requests
    try:
        for number in range(1, (args.charge or args.n) + 1):
            request = build_client_request(
                product,
                when=args.time or datetime.now(UTC),
                version=ProtocolVersion(args.protocol) if args.protocol else None,
                cmid=cmid,
                machine_name=args.machine_name,
                license_status=args.license_status,
                is_vm=args.vm,
                required_count=args.required_count,
            )
            if client is None:
                connected = await _connect(args, hosts, request, product.threshold)
                if isinstance(connected, Outcome):
                    code = _emit(args, number, connected)
                    exit_code = exit_code or code
                    continue
                client, (host, port) = connected
                hosts = [(host, port)]  # later connections go where the first one went
            outcome = await exchange(
                client, request, target=format_address(hosts[0]), threshold=product.threshold,
                require_activation=args.require_activation,
            )  # fmt: skip
            code = _emit(args, number, outcome)
            exit_code = exit_code or code
            if args.new_connection or outcome.exit_code in (EXIT_VERIFY, EXIT_UNAVAILABLE):
                await client.close()
                client = None
    finally:
        if client is not None:
            await client.close()
    return exit_code


async def _connect(
    args: argparse.Namespace, hosts: list[tuple[str, int]], request: KmsRequest, threshold: int
) -> tuple[KmsClient, tuple[str, int]] | Outcome:
    """An association with the first host that answers, or the failure to report."""

    async def attempt(host: str, port: int) -> tuple[KmsClient, tuple[str, int]]:
        client = await KmsClient.connect(
            host, port, ndr64=args.ndr64, btfn=args.btfn, timeout_s=args.timeout
        )
        return client, (host, port)

    if len(hosts) == 1:
        try:
            return await attempt(*hosts[0])
        except ClientError as exc:
            return unavailable(format_address(hosts[0]), request, threshold, exc)
    try:
        return await first_answering(hosts, attempt)
    except NoHostAnsweredError as exc:
        tried = "; ".join(f"{format_address((h, p))}: {reason}" for h, p, reason in exc.attempts)
        target = ",".join(format_address((h, p)) for h, p in hosts)
        return Outcome(target, request, threshold, exc.hresult, "connect", f"{exc}: {tried}")


def _emit(args: argparse.Namespace, number: int, outcome: Outcome) -> int:
    print(json.dumps(outcome.as_json(number)) if args.json else outcome.describe(number))
    return outcome.exit_code


def _emit_discovery_failure(args: argparse.Namespace, exc: DiscoveryError) -> None:
    if args.json:
        hresult = hex_code(exc.hresult)
        failure = {"request": None, "ok": False, "stage": "discover", "hresult": hresult}
        print(json.dumps({**failure, "error": str(exc)}))
    else:
        print(f"discovery of {args.discover} FAILED {hex_code(exc.hresult)}: {exc}")
