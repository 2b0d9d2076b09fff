"""The host's decision for one request, as a pure function of the request and the tables.

Nothing here does I/O or reads the clock: ``now`` and the client tally are arguments, so
every rule is unit-tested without a database or a real clock (architecture 4.3). The rules are
those of a genuine host (spec 7.1, 7.2, 7.4; kms-host-behaviour 2.1, 2.7), in this order:

1. RequiredClientCount above ``policy.max_required_client_count`` (1000): 0x8007000D.
2. Client clock more than ``policy.clock_skew_max_s`` (4 h) off: 0xC004F06C.
3. KMS counted ID unknown to the catalog: accepted and noted, or 0xC004F042 with
   ``policy.refuse_unknown``.
4. Known KMS ID that no held host-key group covers (``[host] scope``): 0xC004F042.
5. SKU that the catalog files under another KMS ID, or a KMS ID of another application
   than the one claimed: noted, and 0xC004F042 with ``policy.strict_sku``.

What is counted, and the count answered, is :mod:`kms_host.policy.counting`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import lru_cache

from kms_host.config import PolicyConfig
from kms_host.policy.catalog import Catalog, HostKeyGroup, KmsProduct, Sku
from protocol.kms import KmsRequest

__all__ = [
    "HRESULT_INVALID_DATA",
    "HRESULT_INVALID_TIMESTAMP",
    "HRESULT_KMS_ID_MISMATCH",
    "Assessment",
    "Refusal",
    "assess",
]

HRESULT_INVALID_DATA = 0x8007000D
HRESULT_KMS_ID_MISMATCH = 0xC004F042
HRESULT_INVALID_TIMESTAMP = 0xC004F06C

_FILETIME_PER_SECOND = 10_000_000


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the host refuses a request, and the HRESULT it answers (spec 7.4)."""

    hresult: int
    reason: str


@dataclass(frozen=True, slots=True)
class Assessment:
    """Everything the host concluded about a request before counting it."""

    app: str
    """Counting pool: the catalog's application key, or the application GUID if unknown."""
    product: KmsProduct | None
    sku: Sku | None
    group: HostKeyGroup | None
    """The held host-key group whose ePID answers this request."""
    notes: tuple[str, ...]
    """Anomalies worth a log field even when the request is served."""
    refusal: Refusal | None


def assess(
    request: KmsRequest,
    *,
    catalog: Catalog,
    scope: frozenset[str],
    policy: PolicyConfig,
    now_filetime: int,
) -> Assessment:
    """Apply the host's rules, in the order of the module docstring."""
    found = _look_up(catalog, scope, request.application_id, request.kms_counted_id, request.sku_id)

    def result(refusal: Refusal | None) -> Assessment:
        return Assessment(found.app, found.product, found.sku, found.group, found.notes, refusal)

    if request.required_client_count > policy.max_required_client_count:
        return result(Refusal(HRESULT_INVALID_DATA, "required_count_too_high"))
    skew_s = abs(request.request_time - now_filetime) / _FILETIME_PER_SECOND
    if policy.check_client_time and skew_s > policy.clock_skew_max_s:
        return result(Refusal(HRESULT_INVALID_TIMESTAMP, "clock_skew"))
    if found.product is None and policy.refuse_unknown:
        return result(Refusal(HRESULT_KMS_ID_MISMATCH, "unknown_kms_id"))
    if found.product is not None and not found.covered:
        return result(Refusal(HRESULT_KMS_ID_MISMATCH, "product_not_in_scope"))
    mismatch = [n for n in found.notes if n in ("sku_kms_mismatch", "application_mismatch")]
    if mismatch and policy.strict_sku:
        return result(Refusal(HRESULT_KMS_ID_MISMATCH, mismatch[0]))
    return result(None)


_LOOKUP_MEMO = 256
"""(catalog, scope, application, KMS ID, SKU) combinations remembered by :func:`_look_up`. A
lab's clients bring a few dozen; requests with made-up IDs only cycle the memo."""


@dataclass(frozen=True, slots=True)
class _Lookup:
    """What the catalog says about a request's three IDs, whatever else it carries."""

    app: str
    product: KmsProduct | None
    sku: Sku | None
    group: HostKeyGroup | None
    notes: tuple[str, ...]
    covered: bool
    """Some in-scope host-key group covers the KMS ID (rule 4)."""


@lru_cache(maxsize=_LOOKUP_MEMO)
def _look_up(
    catalog: Catalog,
    scope: frozenset[str],
    application_id: uuid.UUID,
    kms_id: uuid.UUID,
    sku_id: uuid.UUID,
) -> _Lookup:
    """The catalog's side of :func:`assess`, memoised: it depends on these arguments only.

    Clients of one kind send the same three IDs with every request, and the lookups and
    UUID hashing cost about two thirds of an assessment (5 of 7.5 µs measured, issue 7). A
    catalog compares by identity and is read-only, and a scope is a frozenset, so an entry
    can never go stale.
    """
    application = catalog.application(application_id)
    product = catalog.kms_product(kms_id)
    sku = catalog.sku(sku_id)
    known_app = application is not None
    return _Lookup(
        app=application.key if application else str(application_id),
        product=product,
        sku=sku,
        group=catalog.group_for(kms_id, application_id, scope),
        notes=_notes(application_id, kms_id, product, sku, catalog, known_app=known_app),
        covered=any(group.key in scope for group in catalog.groups_covering(kms_id)),
    )


def _notes(
    application_id: uuid.UUID,
    kms_id: uuid.UUID,
    product: KmsProduct | None,
    sku: Sku | None,
    catalog: Catalog,
    *,
    known_app: bool,
) -> tuple[str, ...]:
    notes: list[str] = []
    if not known_app:
        notes.append("unknown_application")
    if product is None:
        notes.append("unknown_kms_id")
    elif catalog.application_id(product.application) != application_id:
        notes.append("application_mismatch")
    if sku is None:
        notes.append("unknown_sku")
    elif sku.kms_id != kms_id:
        notes.append("sku_kms_mismatch")
    return tuple(notes)
