"""``kms-host probe HOST[:PORT]``: one real activation, fully verified; the health check.

A listening socket proves nothing (architecture 4.8): the probe binds like a Windows client
(NDR32 + NDR64 + BTFN), sends one KMS V6 request for a product the host serves with the
current time and the reserved CMID :data:`~kms_host.policy.activation.PROBE_CMID` (answered,
never counted, never stored, so a health check every 30 s leaves the client table alone), and
believes the answer only after every check of spec 5.7 (:meth:`KmsClient.activate`) plus the
ones a genuine client adds: a well-formed ePID (spec 6.1), a V6 HwId and renewal intervals in
range.

The product is ``--product`` (a name, GVLK or GUID, as ``kms-host activate --product`` and
``kms-host products`` take it), else the first product the host's ``[host] scope`` serves:
the probe reads the configuration as ``serve`` does (``--config``, ``$KMS_HOST_CONFIG``, the
``KMS_HOST_*`` variables), so that a health check run inside the host's container, with its
environment, asks for what that host holds. That is Windows 10/11 Pro whenever the scope
serves it (every Windows host key activates it, spec 8.6), else the first product, by
catalog name, that the first group named in the scope serves and a real client could ask
for (a published GVLK; not retail, preview or uncertain). An Office-only host is then
healthy, and a host that refuses the product it should serve is not.

The port defaults to 1688, as for ``kms-host activate``.

The request carries this machine's clock: a host run with a ``[clock] offset_s`` beyond its
``clock_skew_max_s`` refuses it (HRESULT 0xC004F06C), exactly as it would refuse a client.

Exit codes follow Docker's HEALTHCHECK contract, which reserves 2 (and 2 is what every
kms-host command returns for a usage error):

* 0: healthy, the host activated the probe and every check passed;
* 1: unhealthy; the one line printed says why: ``refused``, ``unreachable``, ``timed out``,
  ``bind failed``, ``bad response``, ``RPC fault 0x...``, ``verification failed (<check>)``
  or ``HRESULT 0x...``; with ``--json``, ``stage`` names it for scripts;
* 2: usage or configuration error (an address that is not HOST[:PORT], a bad ``--timeout``,
  an unknown or ambiguous ``--product``, a config the host would refuse).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kms_host.addresses import ListenAddress, parse_listen
from kms_host.client.judgement import (
    KMS_PORT,
    Product,
    ProductError,
    build_client_request,
    choose_product,
)
from kms_host.client.strict import ActivationResult, ClientError, KmsClient
from kms_host.config import ConfigOverrides, load_config
from kms_host.errors import EXIT_USAGE, ConfigError
from kms_host.policy.activation import (
    HRESULT_INVALID_DATA,
    HRESULT_INVALID_TIMESTAMP,
    HRESULT_KMS_ID_MISMATCH,
    PROBE_CMID,
)
from kms_host.policy.catalog import Catalog, CatalogError, Sku
from kms_host.policy.catalog_file import load_catalog
from protocol.errors import EpidError, ResponseVerificationError
from protocol.kms import KmsRequest, LicenseStatus, ProtocolVersion
from protocol.kms.epid import HWID_LENGTH, format_hwid, parse_epid

__all__ = ["PROBE_GVLK", "ProbeFailed", "probe", "probe_product", "register"]

PROBE_GVLK = "W269N-WFGWX-YVC9B-4J6C9-T83GX"
"""Windows 10/11 Pro: the product every Windows KMS host key activates (spec 8.6)."""

INTERVAL_RANGE_MIN = range(15, 43201)
"""What a genuine host can be set to (``slmgr /sai``, ``/sri``): 15 minutes to 30 days."""

_MEANINGS = {
    HRESULT_KMS_ID_MISMATCH: "the host does not serve this product",
    HRESULT_INVALID_TIMESTAMP: "the host's clock and ours differ by more than it allows",
    HRESULT_INVALID_DATA: "the host found the request invalid",
}


_STAGES = {
    "connect": ("unreachable", "unreachable"),
    "timeout": ("timeout", "timed out"),
    "bind": ("bind", "bind failed"),
}
"""ClientError stage -> (our stage, label); "call" and "closed" make a bad response."""


class ProbeFailed(Exception):
    """The host is not healthy; ``stage`` is stable for scripts, ``str()`` is the one line."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.stage = stage


@dataclass(frozen=True, slots=True)
class ProbeReport:
    """A healthy answer, as printed."""

    latency_ms: float
    product: str
    count: int
    epid: str
    hwid: str
    activation_interval_min: int
    renewal_interval_min: int


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``probe`` subcommand."""
    parser = commands.add_parser(
        "probe", help="one real, verified V6 activation: exit 0 only if the host is healthy"
    )
    parser.add_argument(
        "address", type=_address, metavar="HOST[:PORT]", help=f"the host (port {KMS_PORT})"
    )
    parser.add_argument(
        "--timeout", type=_timeout, default=5.0, metavar="S", help="whole exchange (default 5)"
    )
    parser.add_argument(
        "--product",
        metavar="NAME|GVLK|GUID",
        help="the product to ask for (default: the first the configured [host] scope serves)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="the host's TOML config, read for its scope (default: $KMS_HOST_CONFIG)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.set_defaults(handler=_run)


def _address(text: str) -> ListenAddress:
    bare_v6 = text.count(":") > 1 and not text.startswith("[")
    if bare_v6 or ":" not in text or (text.startswith("[") and text.endswith("]")):
        text = f"[{text.strip('[]')}]:{KMS_PORT}" if ":" in text else f"{text}:{KMS_PORT}"
    try:
        address = parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if address.port == 0:
        raise argparse.ArgumentTypeError("port 0 cannot be probed")
    return address


def _timeout(text: str) -> float:
    value = float(text)
    if not 0 < value <= 300:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 300 seconds")
    return value


def _run(args: argparse.Namespace) -> int:
    address: ListenAddress = args.address
    try:
        product = _product(args)
    except ConfigError as exc:
        print(f"kms-host probe: {exc.summary()}", file=sys.stderr)
        return EXIT_USAGE
    except ProductError as exc:
        print(f"kms-host probe: --product: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        report = asyncio.run(
            probe(address.host, address.port, timeout_s=args.timeout, product=product)
        )
    except ProbeFailed as exc:
        if args.json:
            failure = {"ok": False, "address": str(address), "stage": exc.stage}
            print(json.dumps({**failure, "reason": str(exc)}))
        else:
            print(f"kms-host probe: {address}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"ok": True, "address": str(address), **_fields(report)}))
    else:
        print(
            f"ok: {address} activated {report.product} (KMS V6) in {report.latency_ms} ms:"
            f" count {report.count}, ePID {report.epid}, HwId {report.hwid}"
        )
    return 0


def _fields(report: ProbeReport) -> dict[str, Any]:
    return {name: getattr(report, name) for name in ProbeReport.__slots__}


def _product(args: argparse.Namespace) -> Product:
    """``--product``, else the first product of the scope the host's config gives it."""
    catalog = load_catalog()
    if args.product is not None:
        return choose_product(catalog, args.product)
    config = load_config(args.config, env=os.environ, overrides=ConfigOverrides())
    try:
        return probe_product(catalog, config.host.scope)
    except CatalogError as exc:
        raise ConfigError(str(exc), key="host.scope") from exc


def probe_product(catalog: Catalog, scope_names: Sequence[str]) -> Product:
    """Windows 10/11 Pro if the scope serves it, else the first group's first servable product.

    Raises :class:`CatalogError` for an unknown group name or a scope that serves nothing.
    """
    scope = catalog.resolve_scope(scope_names)
    default = choose_product(catalog, PROBE_GVLK)
    if catalog.group_for(default.kms_id, default.application_id, scope) is not None:
        return default
    names = (scope_names,) if isinstance(scope_names, str) else scope_names
    for name in names:
        group = catalog.host_key_group(name.strip().lower())
        served = [sku for sku in catalog.skus.values() if group and sku.kms_id in group.kms_ids]
        if served:
            return choose_product(catalog, sku=min(served, key=lambda s: _rank(catalog, s)).id)
    raise CatalogError(f"the host-key scope {list(names)} serves no product the probe can ask for")


def _rank(catalog: Catalog, sku: Sku) -> tuple[bool, bool, str, str]:
    """Sort key: what real clients ask for first (a published GVLK, no retail or preview)."""
    kms = catalog.kms_products[sku.kms_id]
    unusual = kms.retail or kms.preview or kms.uncertain or "Preview" in sku.name
    return unusual, sku.gvlk is None or sku.gvlk_generated, sku.name.casefold(), str(sku.id)


async def probe(
    host: str, port: int, *, timeout_s: float, product: Product | None = None
) -> ProbeReport:
    """Activate once as the probe; return what the host said or raise :class:`ProbeFailed`.

    ``product`` is what to ask for: Windows 10/11 Pro when not given.
    """
    request, name = probe_request(datetime.now(UTC), product)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            async with await KmsClient.connect(host, port, timeout_s=timeout_s) as client:
                result = await client.activate(request)
    except TimeoutError:
        reason = f"timed out: no verified answer within {timeout_s} s"
        raise ProbeFailed("timeout", reason) from None
    except ClientError as exc:
        raise _failure(exc) from exc
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    return _check(result, name, latency_ms)


def probe_request(now: datetime, product: Product | None = None) -> tuple[KmsRequest, str]:
    """The probe's V6 request (``product``, by default Windows 10/11 Pro; the reserved CMID)."""
    product = product or choose_product(load_catalog(), PROBE_GVLK)
    request = build_client_request(
        product,
        when=now,
        version=ProtocolVersion.V6,
        cmid=PROBE_CMID,
        machine_name="kms-host-probe",
        license_status=LicenseStatus.LICENSED,
    )
    return request, product.name


def _failure(exc: ClientError) -> ProbeFailed:
    """Name what went wrong from where the client stopped (``ClientError.stage``)."""
    cause = exc.__cause__
    if exc.stage == "connect" and isinstance(cause, ConnectionRefusedError):
        return ProbeFailed("refused", "refused: nothing listens there (connection refused)")
    if exc.stage == "verify":
        check = cause.check if isinstance(cause, ResponseVerificationError) else "format"
        return ProbeFailed("verify", f"verification failed ({check}): {exc}")
    if exc.status is not None:
        return ProbeFailed("fault", f"RPC fault 0x{exc.status:08X}")
    stage, label = _STAGES.get(exc.stage, ("response", "bad response"))
    text = str(exc)  # the bind stage's own messages already say "bind failed" or "bind refused"
    return ProbeFailed(stage, text if text.startswith(label.split()[0]) else f"{label}: {text}")


def _check(result: ActivationResult, product: str, latency_ms: float) -> ProbeReport:
    """The checks a client makes beyond spec 5.7's (which :class:`KmsClient` has made)."""
    if result.hresult != 0:
        meaning = _MEANINGS.get(result.hresult, "the host refused the activation")
        raise ProbeFailed("hresult", f"HRESULT 0x{result.hresult:08X}: {meaning}")
    response = result.response
    assert response is not None, "KmsClient returns a response with HRESULT 0"
    try:
        parse_epid(response.epid)
    except EpidError as exc:
        raise ProbeFailed("verify", f"verification failed (epid_layout): {exc}") from exc
    if result.hwid is None or len(result.hwid) != HWID_LENGTH:
        raise ProbeFailed("verify", "verification failed (hwid): a V6 answer carries 8 bytes")
    intervals = (response.activation_interval_min, response.renewal_interval_min)
    if not all(minutes in INTERVAL_RANGE_MIN for minutes in intervals):
        raise ProbeFailed("verify", f"verification failed (intervals): {intervals} minutes")
    return ProbeReport(
        latency_ms=latency_ms,
        product=product,
        count=response.current_client_count,
        epid=response.epid,
        hwid=format_hwid(result.hwid),
        activation_interval_min=response.activation_interval_min,
        renewal_interval_min=response.renewal_interval_min,
    )
