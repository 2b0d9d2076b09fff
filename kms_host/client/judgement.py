"""The strict client's judgement: which product to send, and what a Windows client would
conclude from the host's answer.

Shared by ``kms-host activate`` (:mod:`kms_host.cli.activate`) and the pytest plugin
(:mod:`kms_host.pytest_plugin`), so both judge a host identically. Every response is verified
with every check of spec 5.7 (:class:`kms_host.client.strict.KmsClient`) first; then the outcome
carries the HRESULT a Windows client would show: the host's own, 0xC004F038 when the count is
below the product's threshold and activation was required (spec 7.2: that code is the
client's), 0xC004F074 when no usable answer came (spec 7.4).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from kms_host.addresses import format_address
from kms_host.client.strict import ClientError, KmsClient
from kms_host.policy.catalog import Catalog
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
    "KMS_PORT",
    "Outcome",
    "Product",
    "ProductError",
    "activate_once",
    "build_client_request",
    "choose_product",
    "exchange",
    "hex_code",
    "hresult_name",
    "unavailable",
]

DEFAULT_SKU: Final = uuid.UUID("2de67392-b7a7-462a-b1ca-108dd189f588")
"""Windows 10/11 Pro, the client activated when no product is named (spec 8.6)."""
HRESULT_NOT_ENOUGH_COUNT: Final = 0xC004F038
HRESULT_UNAVAILABLE: Final = 0xC004F074
KMS_PORT: Final = 1688
_GRACE_MIN: Final = 43200  # a client in its first 30 days of grace, as a fresh install sends
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
            "hresult": hex_code(self.hresult),
            "stage": self.stage,
            "error": self.error,
            "fault_status": None if self.fault_status is None else hex_code(self.fault_status),
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
            return f"{head} FAILED {hex_code(self.hresult)} ({self.stage}): {self.error}; {cmid}"
        verdict = "activated" if self.stage is None else f"NOT ACTIVATED {hex_code(self.hresult)}"
        hwid = f", HwId {self.hwid.hex().upper()}" if self.hwid else ""
        return (
            f"{head} {verdict}: count {response.current_client_count} (threshold "
            f"{self.threshold}), ePID {response.epid}{hwid}, intervals "
            f"{response.activation_interval_min}/{response.renewal_interval_min} min; {cmid}"
        )


def hresult_name(value: int) -> str | None:
    """The Microsoft name of an HRESULT a host may answer (``S_OK`` for 0), else None."""
    return "S_OK" if value == 0 else _HOST_HRESULTS.get(value & 0xFFFFFFFF)


def hex_code(value: int) -> str:
    """An HRESULT or status as Windows prints it: ``0xC004F042``."""
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
        return unavailable(target, request, threshold, exc)
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


def unavailable(target: str, request: KmsRequest, threshold: int, exc: ClientError) -> Outcome:
    """The outcome when no usable answer came: what Windows reports as 0xC004F074."""
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
    target = format_address((host, port))
    try:
        client = await KmsClient.connect(host, port, ndr64=ndr64, btfn=btfn, timeout_s=timeout_s)
    except ClientError as exc:
        return unavailable(target, request, threshold, exc)
    async with client:
        return await exchange(
            client, request, target=target, threshold=threshold,
            require_activation=require_activation,
        )  # fmt: skip
