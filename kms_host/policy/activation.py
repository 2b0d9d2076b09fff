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

Counting (spec 7.2): per application, the distinct CMIDs seen in the window including the
requester, capped at twice the largest threshold seen; ``prefill = "threshold"`` adds
synthetic non-expiring clients so that the first real client already sees its threshold. The
store computes the :class:`AppTally`; :func:`reported_count` only reads it.

:func:`decide` puts the rules and the ``[[scenario]]`` rules together into one
:class:`Decision`, before the client table is touched; the service then commits, seals and
logs in that order (:mod:`kms_host.host.service`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import lru_cache

from kms_host.config import CountingConfig, CountingMode, PolicyConfig, Prefill
from kms_host.policy.catalog import Catalog, HostKeyGroup, KmsProduct, Sku
from kms_host.policy.scenario import ScenarioBook, ScenarioRule, Subject
from protocol.kms import KmsRequest

__all__ = [
    "HRESULT_INVALID_DATA",
    "HRESULT_INVALID_TIMESTAMP",
    "HRESULT_KMS_ID_MISMATCH",
    "PROBE_CMID",
    "AppTally",
    "Assessment",
    "Decision",
    "Refusal",
    "assess",
    "decide",
    "reported_count",
]

HRESULT_INVALID_DATA = 0x8007000D
HRESULT_KMS_ID_MISMATCH = 0xC004F042
HRESULT_INVALID_TIMESTAMP = 0xC004F06C

_FILETIME_PER_SECOND = 10_000_000

PROBE_CMID = uuid.UUID("00000000-0000-4000-8000-000000001688")
"""The client machine ID ``kms-host probe`` sends: answered normally, never counted, never
stored, logged at debug level only (a health check every 30 s must not fill the table)."""


@dataclass(frozen=True, slots=True)
class AppTally:
    """The counting state of one application within a window."""

    live_clients: int
    """Distinct counted CMIDs whose last counted activation is at or after ``since``."""
    max_required_count: int
    """Largest RequiredClientCount among those activations (0 if none): the count's cap is
    twice this on a genuine host."""


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


@dataclass(frozen=True, slots=True)
class Decision:
    """What the host does with one opened request, decided before the client table is touched."""

    assessment: Assessment
    probe: bool
    """The request carries the probe's reserved CMID: answered, never counted nor stored."""
    rule: ScenarioRule | None
    """The ``[[scenario]]`` rule acting on this request, if any."""
    refusal: Refusal | None
    """Why the answer is not an activation: the host's own verdict, or the rule's ``hresult``."""

    @property
    def unanswered(self) -> bool:
        """A ``close`` or ``rpc_fault`` rule: answered before the table, so nothing is recorded."""
        return self.rule is not None and (self.rule.close or self.rule.rpc_fault is not None)

    def count(self, tally: AppTally, *, required: int, counting: CountingConfig) -> int:
        """The CurrentClientCount to answer: the counting rule's, unless a rule sets ``count``."""
        if self.rule is not None and self.rule.count is not None:
            return self.rule.count
        return reported_count(tally, required=required, counting=counting)


def decide(
    request: KmsRequest,
    *,
    peer: str,
    now_filetime: int,
    catalog: Catalog,
    scope: frozenset[str],
    policy: PolicyConfig,
    scenarios: ScenarioBook,
) -> Decision:
    """Judge ``request`` by the host's rules, then let a matching scenario rule override.

    A rule's ``hresult`` replaces the host's verdict (a refusal stays recorded, not counted);
    the probe is matched only by a rule naming its CMID (:meth:`ScenarioRule.matches`).
    """
    assessment = assess(
        request, catalog=catalog, scope=scope, policy=policy, now_filetime=now_filetime
    )
    probe = request.client_machine_id == PROBE_CMID
    rule = (
        scenarios.select(_subject(request, assessment.app, peer, probe=probe))
        if scenarios.rules  # the usual case: no rules, nothing to match
        else None
    )
    refusal = assessment.refusal
    if rule is not None and rule.hresult is not None:
        refusal = Refusal(rule.hresult, "scenario")
    return Decision(assessment, probe, rule, refusal)


def _subject(request: KmsRequest, app: str, peer: str, *, probe: bool) -> Subject:
    return Subject(
        cmid=request.client_machine_id,
        machine_name=request.machine_name,
        app=app,
        application_id=request.application_id,
        kms_id=request.kms_counted_id,
        sku=request.sku_id,
        peer=peer,
        protocol=request.version.value,
        probe=probe,
    )


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
    UUID hashing are most of an assessment's cost. A catalog compares by identity and is
    read-only, and a scope is a frozenset, so an entry can never go stale.
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


def reported_count(tally: AppTally, *, required: int, counting: CountingConfig) -> int:
    """The CurrentClientCount to answer (spec 7.2; the ``[counting]`` settings).

    ``tally`` already includes the requester. ``required`` is the request's
    RequiredClientCount (0 when asking for the host's current count, as ``status`` does).
    """
    if counting.mode is CountingMode.FIXED:
        return counting.fixed_count
    largest = max(tally.max_required_count, required)
    if counting.mode is CountingMode.SATURATED:
        return max(2 * largest, 1)
    if tally.live_clients == 0 and required == 0:
        return 0
    prefill = largest - 1 if counting.prefill is Prefill.THRESHOLD and largest > 0 else 0
    return min(tally.live_clients + prefill, max(2 * largest, 1))
