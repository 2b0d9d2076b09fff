"""``kms-host activate``: a strict KMS client that judges a host as a Windows client would.

The public emulators' clients exit 0 on most failures; this one does not (issue 5 item 1).
Every response is verified with every check of spec 5.7 (:class:`kms_host.client.KmsClient`)
before a line is printed, and each request is reported with the HRESULT a Windows client
would show: the host's own, 0xC004F038 when ``--require-activation`` finds the count below
the product's threshold (spec 7.2: that code is the client's), 0xC004F074 when no usable
answer came (spec 7.4). ``--discover DOMAIN`` finds the host by its ``_vlmcs._tcp`` SRV record
and fails over like a client (issue 6 item 4; :mod:`kms_host.srv_lookup`).

Exit codes (with several requests, the code of the first that failed; all are still sent):

* 0: every request activated (with ``--require-activation``: at or above the threshold)
* 1: the host answered an HRESULT other than 0
* 2: usage: a bad option, an unknown or ambiguous product
* 3: ``--require-activation`` and a count below the threshold (0xC004F038)
* 4: a response failed verification (spec 5.7)
* 5: no usable answer: connect, bind, RPC fault, closed or timed out (0xC004F074)
* 6: discovery found no host: no SRV record (0x8007232B) or the DNS server failed

The product resolution, request building and :func:`activate_once` are shared with the
pytest plugin (:mod:`kms_host.pytest_plugin`), so both judge a host identically.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import socket
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

from kms_host.catalog import Catalog, load_catalog
from kms_host.client import ClientError, KmsClient
from kms_host.dns_config import parse_host_port
from kms_host.logs import configure_logging
from kms_host.srv_lookup import DiscoveryError, NoHostAnsweredError, discover, first_answering
from protocol.kms import (
    KmsRequest,
    KmsResponse,
    LicenseStatus,
    ProtocolVersion,
    datetime_to_filetime,
)

__all__ = [
    "DEFAULT_SKU",
    "HRESULT_NOT_ENOUGH_COUNT",
    "HRESULT_UNAVAILABLE",
    "Outcome",
    "Product",
    "ProductError",
    "activate_once",
    "build_client_request",
    "choose_product",
    "exchange",
    "register",
]

DEFAULT_SKU: Final = uuid.UUID("2de67392-b7a7-462a-b1ca-108dd189f588")
"""Windows 10/11 Pro, the client activated when no product is named (spec 8.6)."""
HRESULT_NOT_ENOUGH_COUNT: Final = 0xC004F038
HRESULT_UNAVAILABLE: Final = 0xC004F074
KMS_PORT: Final = 1688
_GRACE_MIN: Final = 43200  # a client in its first 30 days of grace, as a fresh install sends
_LIST_LIMIT: Final = 25
_HOST_HRESULTS: Final = {  # what a host may answer (spec 7.4), named as Windows names them
    0x8007000D: "ERROR_INVALID_DATA",
    0x80070005: "E_ACCESSDENIED",
    0xC004D104: "SL_REMAPPING_SP_STATUS_INVALIDARG",
    0xC004F039: "SL_E_VL_BINDING_SERVICE_NOT_ENABLED",
    0xC004F041: "SL_E_VL_KEY_MANAGEMENT_SERVICE_NOT_ACTIVATED",
    0xC004F042: "SL_E_VL_KEY_MANAGEMENT_SERVICE_ID_MISMATCH",
    0xC004F06B: "SL_E_VL_KEY_MANAGEMENT_SERVICE_VM_NOT_SUPPORTED",
    0xC004F06C: "SL_E_VL_INVALID_TIMESTAMP",
}

EXIT_OK, EXIT_HRESULT, EXIT_USAGE, EXIT_COUNT = 0, 1, 2, 3
EXIT_VERIFY, EXIT_UNAVAILABLE, EXIT_NO_HOST = 4, 5, 6
_EXIT_BY_STAGE: Final[dict[str | None, int]] = {
    None: EXIT_OK,
    "host": EXIT_HRESULT,
    "threshold": EXIT_COUNT,
    "verify": EXIT_VERIFY,
}


# --- what to send ----------------------------------------------------------------------------


class ProductError(ValueError):
    """``--product`` names no product, or several; ``candidates`` lists them as (name, SKU)."""

    def __init__(self, message: str, candidates: Sequence[tuple[str, uuid.UUID]] = ()) -> None:
        super().__init__(message)
        self.candidates = tuple(candidates)


@dataclass(frozen=True, slots=True)
class Product:
    """The identity a client request claims, and what the client expects of the answer."""

    name: str
    application_id: uuid.UUID
    kms_id: uuid.UUID
    sku_id: uuid.UUID
    threshold: int
    """The count the client needs (and sends as RequiredClientCount)."""
    protocol: ProtocolVersion
    """The protocol this product's client speaks by default."""


def choose_product(
    catalog: Catalog,
    query: str | None = None,
    *,
    app: uuid.UUID | None = None,
    kms_id: uuid.UUID | None = None,
    sku: uuid.UUID | None = None,
) -> Product:
    """The product named by ``query`` (name, GVLK or GUID), else by ``sku``, else Windows Pro.

    ``app``, ``kms_id`` and ``sku`` then override its GUIDs, so that mismatched or unknown
    identities can be sent on purpose; the threshold and protocol follow the final KMS ID
    when the catalog knows it.
    """
    if query is not None:
        found = catalog.search(query)
        exact = [s for s in found if s.name.casefold() == query.strip().casefold()]
        if len(exact) == 1 or len(found) == 1:
            base = (exact or found)[0]
        elif not found:
            raise ProductError(f"no product matches {query!r}")
        else:
            candidates = [(s.name, s.id) for s in found]
            raise ProductError(f"{len(found)} products match {query!r}", candidates)
    else:
        base = (catalog.sku(sku) if sku else None) or catalog.skus[DEFAULT_SKU]
    kms = catalog.kms_products[base.kms_id]
    chosen = Product(
        base.name,
        catalog.application_id(kms.application),
        base.kms_id,
        base.id,
        kms.threshold,
        kms.default_protocol,
    )
    final_kms = catalog.kms_product(kms_id) if kms_id else None
    if final_kms is not None:
        chosen = replace(chosen, threshold=final_kms.threshold, protocol=final_kms.default_protocol)
    return replace(
        chosen,
        application_id=app or chosen.application_id,
        kms_id=kms_id or chosen.kms_id,
        sku_id=sku or chosen.sku_id,
    )


def build_client_request(
    product: Product,
    *,
    when: datetime,
    version: ProtocolVersion | None = None,
    cmid: uuid.UUID | None = None,
    machine_name: str | None = None,
    license_status: int = LicenseStatus.INITIAL_GRACE,
    is_vm: bool = False,
    required_count: int | None = None,
) -> KmsRequest:
    """The base request a client of ``product`` sends at ``when`` (its own clock, spec 4.2)."""
    return KmsRequest(
        version=version or product.protocol,
        is_client_vm=int(is_vm),
        license_status=license_status,
        grace_time_min=_GRACE_MIN,
        application_id=product.application_id,
        sku_id=product.sku_id,
        kms_counted_id=product.kms_id,
        client_machine_id=cmid or uuid.uuid4(),
        required_client_count=product.threshold if required_count is None else required_count,
        request_time=datetime_to_filetime(when),
        previous_client_machine_id=uuid.UUID(int=0),
        machine_name=machine_name or socket.gethostname(),
    )


# --- what came back --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request as a Windows client judges it."""

    target: str
    """``host:port`` asked."""
    request: KmsRequest
    threshold: int
    hresult: int
    """0, the host's HRESULT, 0xC004F038 (count below the threshold, when required) or
    0xC004F074 (no usable answer)."""
    stage: str | None = None
    """Where it failed: ``host`` (an HRESULT), ``threshold``, or the client's stage
    (``connect``, ``bind``, ``call``, ``verify``, ``timeout``, ``closed``)."""
    error: str | None = None
    fault_status: int | None = None
    """The RPC fault status, when the host answered with a fault."""
    response: KmsResponse | None = None
    hwid: bytes | None = None

    @property
    def count(self) -> int | None:
        """CurrentClientCount of a verified response."""
        return self.response.current_client_count if self.response else None

    @property
    def epid(self) -> str | None:
        """The host's ePID from a verified response."""
        return self.response.epid if self.response else None

    @property
    def exit_code(self) -> int:
        """This request's exit code (module docstring)."""
        return _EXIT_BY_STAGE.get(self.stage, EXIT_UNAVAILABLE)

    def as_json(self, number: int) -> dict[str, Any]:
        """One JSON object; every key is always present (null when not applicable)."""
        response = self.response
        return {
            "request": number,
            "target": self.target,
            "protocol": f"{self.request.version.value}.0",
            "cmid": str(self.request.client_machine_id),
            "ok": self.hresult == 0,
            "hresult": _hex(self.hresult),
            "stage": self.stage,
            "error": self.error,
            "fault_status": None if self.fault_status is None else _hex(self.fault_status),
            "count": self.count,
            "threshold": self.threshold,
            "epid": self.epid,
            "hwid": self.hwid.hex().upper() if self.hwid else None,
            "activation_interval_min": response.activation_interval_min if response else None,
            "renewal_interval_min": response.renewal_interval_min if response else None,
        }

    def describe(self, number: int) -> str:
        """One line for a person."""
        head = f"#{number} {self.target} v{self.request.version.value}"
        cmid = f"cmid {self.request.client_machine_id}"
        response = self.response
        if response is None or self.stage not in (None, "threshold"):
            return f"{head} FAILED {_hex(self.hresult)} ({self.stage}): {self.error}; {cmid}"
        verdict = "activated" if self.stage is None else f"NOT ACTIVATED {_hex(self.hresult)}"
        hwid = f", HwId {self.hwid.hex().upper()}" if self.hwid else ""
        return (
            f"{head} {verdict}: count {response.current_client_count} (threshold "
            f"{self.threshold}), ePID {response.epid}{hwid}, intervals "
            f"{response.activation_interval_min}/{response.renewal_interval_min} min; {cmid}"
        )


def _hex(value: int) -> str:
    return f"0x{value:08X}"


async def exchange(
    client: KmsClient,
    request: KmsRequest,
    *,
    target: str,
    threshold: int,
    require_activation: bool = False,
) -> Outcome:
    """Send one request on an open association and judge the answer."""
    try:
        result = await client.activate(request)
    except ClientError as exc:
        return _unavailable(target, request, threshold, exc)
    if result.response is None:
        name = _HOST_HRESULTS.get(result.hresult, "an unknown HRESULT")
        return Outcome(target, request, threshold, result.hresult, "host", f"host answered {name}")
    count = result.response.current_client_count
    if require_activation and count < threshold:
        error = f"count {count} is below the threshold {threshold}"
        return Outcome(
            target, request, threshold, HRESULT_NOT_ENOUGH_COUNT, "threshold", error,
            response=result.response, hwid=result.hwid,
        )  # fmt: skip
    return Outcome(target, request, threshold, 0, response=result.response, hwid=result.hwid)


def _unavailable(target: str, request: KmsRequest, threshold: int, exc: ClientError) -> Outcome:
    return Outcome(target, request, threshold, HRESULT_UNAVAILABLE, exc.stage, str(exc), exc.status)


async def activate_once(
    host: str,
    port: int,
    request: KmsRequest,
    *,
    threshold: int,
    ndr64: bool = True,
    btfn: bool = True,
    timeout_s: float = 5.0,
    require_activation: bool = False,
) -> Outcome:
    """Connect, bind, send one request, judge the answer, close."""
    target = _format(host, port)
    try:
        client = await KmsClient.connect(host, port, ndr64=ndr64, btfn=btfn, timeout_s=timeout_s)
    except ClientError as exc:
        return _unavailable(target, request, threshold, exc)
    async with client:
        return await exchange(
            client, request, target=target, threshold=threshold,
            require_activation=require_activation,
        )  # fmt: skip


def _format(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
                client, request, target=_format(*hosts[0]), threshold=product.threshold,
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
            return _unavailable(_format(*hosts[0]), request, threshold, exc)
    try:
        return await first_answering(hosts, attempt)
    except NoHostAnsweredError as exc:
        tried = "; ".join(f"{_format(h, p)}: {reason}" for h, p, reason in exc.attempts)
        target = ",".join(_format(h, p) for h, p in hosts)
        return Outcome(target, request, threshold, exc.hresult, "connect", f"{exc}: {tried}")


def _emit(args: argparse.Namespace, number: int, outcome: Outcome) -> int:
    print(json.dumps(outcome.as_json(number)) if args.json else outcome.describe(number))
    return outcome.exit_code


def _emit_discovery_failure(args: argparse.Namespace, exc: DiscoveryError) -> None:
    if args.json:
        failure = {"request": None, "ok": False, "stage": "discover", "hresult": _hex(exc.hresult)}
        print(json.dumps({**failure, "error": str(exc)}))
    else:
        print(f"discovery of {args.discover} FAILED {_hex(exc.hresult)}: {exc}")
