"""The imperative shell of one activation: open, decide, commit, seal, log.

Path of a call (architecture 4.3): the RPC layer has already unwrapped the NDR stub; here
the KMS message is opened (decrypted and verified, spec 5.5/5.6), the pure
:func:`~kms_host.policy.activation.decide` judges it, the client table records the sighting
and returns the tally in one committed transaction, and only then is the response sealed and
handed back: a response is never sent for a client record that is not on disk.

Each call yields exactly one ``activation`` log event carrying the fields of a genuine
host's event 12290 (kms-host-behaviour 2.6) plus what a lab wants to follow; a change of
any application's count yields one ``counts`` event.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import structlog

from kms_host.batching import LoopBatcher
from kms_host.clock import Clock
from kms_host.config import Config
from kms_host.errors import StorageError
from kms_host.host.identity import HostIdentity
from kms_host.host.observe import ActivationOutcome, HostObserver, NullObserver
from kms_host.host.reply import KmsReply
from kms_host.host.storage_health import StorageHealth
from kms_host.policy.activation import AppTally, Assessment, Decision, decide, reported_count
from kms_host.policy.catalog import Catalog
from kms_host.policy.scenario import ScenarioBook, ScenarioRule, corrupt, log_fields
from kms_host.storage import ClientStore, Sighting
from protocol.errors import KmsError
from protocol.kms import (
    KmsRequest,
    KmsResponse,
    LicenseStatus,
    OpenedRequest,
    datetime_to_filetime,
    filetime_to_datetime,
    open_requests,
    peek_version,
    seal_responses,
)
from protocol.rpc import CallReceived

__all__ = ["ActivationService"]

log = structlog.get_logger("kms_host.activation")


def _hex(value: int) -> str:
    return f"0x{value:08X}"


_LICENSE_STATUS_NAMES = {status.value: status.name.lower() for status in LicenseStatus}


def _license_status(value: int) -> str:
    """The status's name for the event (``initial_grace``), or the number if it has none."""
    return _LICENSE_STATUS_NAMES.get(value) or str(value)


def _client_time(filetime: int) -> str:
    try:
        return filetime_to_datetime(filetime).isoformat().replace("+00:00", "Z")
    except OverflowError:
        return str(filetime)


class ActivationService:
    """Answers CallReceived events; one instance per running host."""

    def __init__(
        self,
        *,
        config: Config,
        catalog: Catalog,
        scope: frozenset[str],
        identity: HostIdentity,
        store: ClientStore,
        clock: Clock,
        observer: HostObserver | None = None,
        scenarios: ScenarioBook | None = None,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._config = config
        self._catalog = catalog
        self._scope = scope
        self._identity = identity
        self._store = store
        self._clock = clock
        # Requests read and replies ready in one loop turn share the cipher's work.
        self._opener = LoopBatcher[bytes, OpenedRequest](
            functools.partial(open_requests, verify_v4_mac=config.policy.verify_v4_mac)
        )
        self._sealer = LoopBatcher[tuple[OpenedRequest, KmsResponse], bytes](
            functools.partial(seal_responses, hwid=identity.hwid, rng=rng)
        )
        self._observer: HostObserver = observer or NullObserver()
        self._scenarios = scenarios or ScenarioBook()
        self._window = timedelta(days=config.counting.window_days)
        self._counts: dict[str, int] = {}
        # A concrete logger, bound once: the module's lazy proxy rebuilds its logger on
        # every call (loggers are not cached, so tests may reconfigure), a cost paid on
        # every activation. The host is built after logging is configured.
        self._log = log.bind()
        self._storage = StorageHealth(self._log)

    @property
    def counts(self) -> dict[str, int]:
        """The current count of every catalog application and of any other seen so far."""
        return dict(self._counts)

    async def start(self) -> None:
        """Load the current counts so the first change is reported against them.

        Every catalog application gets one, even without clients, so that a metrics gauge
        exists from the start (0, or the fixed/saturated count such a host reports).
        """
        tallies = await self._store.tallies(since=self._clock.now() - self._window)
        apps = [app.key for app in self._catalog.applications.values()]
        self._counts = self._counts_from(apps, tallies)
        self._observer.counts(dict(sorted(self._counts.items())))

    def _counts_from(self, apps: Iterable[str], tallies: dict[str, AppTally]) -> dict[str, int]:
        """Each of ``apps`` at no live client, then the apps of ``tallies`` as tallied."""
        empty = self._current(AppTally(live_clients=0, max_required_count=0))
        return dict.fromkeys(apps, empty) | {app: self._current(t) for app, t in tallies.items()}

    def _current(self, tally: AppTally) -> int:
        return reported_count(tally, required=0, counting=self._config.counting)

    async def handle(self, call: CallReceived, peer: str) -> KmsReply:
        """Answer one RequestActivation call."""
        started = time.perf_counter()
        base: dict[str, Any] = {"call_id": call.call_id, "ndr": call.syntax.value, "peer": peer}
        try:
            opened = await self._opener.run(call.kms_message)
        except KmsError as exc:
            try:
                await self._store.count_unreadable()
            except StorageError as storage_exc:
                self._storage.failed(storage_exc)  # the answer stays the one for its input
            else:
                self._storage.ok()
            self._finish(
                self._log.warning,
                started,
                {**base, "protocol": _peek(call.kms_message)},
                app=None,
                group=None,
                code=exc.hresult,
                result="malformed",
                hresult=_hex(exc.hresult),
                reason=type(exc).__name__,
                detail=str(exc),
            )
            return KmsReply(hresult=exc.hresult)
        return await self._decide(opened, base, started)

    async def _decide(
        self, opened: OpenedRequest, base: dict[str, Any], started: float
    ) -> KmsReply:
        """Decide (pure), then commit, seal and log, in that order."""
        request = opened.request
        now = self._clock.now()
        decision = decide(
            request,
            peer=base["peer"],
            now_filetime=datetime_to_filetime(now),
            catalog=self._catalog,
            scope=self._scope,
            policy=self._config.policy,
            scenarios=self._scenarios,
        )
        assessment, rule, probe = decision.assessment, decision.rule, decision.probe
        if rule is not None:
            await asyncio.sleep(rule.delay_ms / 1000)
        fields = {**base, **self._event_fields(opened, assessment)}
        if rule is not None:
            fields |= log_fields(rule)
        group = assessment.group.key if assessment.group else None
        if rule is not None and decision.unanswered:
            return self._unanswered(rule, fields, started, app=assessment.app, group=group)
        try:
            if probe:
                tally = await self._store.tally(assessment.app, since=now - self._window)
            else:
                sighting = _sighting(request, decision, peer=base["peer"], seen_at=now)
                tally = await self._store.record(sighting, since=now - self._window)
        except StorageError as exc:
            # Never "activated" without its row: the client is told why it was not recorded
            # (kms_host.errors); the cause is logged once per episode, not once per request.
            self._storage.failed(exc)
            self._finish(
                self._log.warning,
                started,
                fields,
                app=assessment.app,
                group=group,
                code=exc.hresult,
                result="storage_failed",
                hresult=_hex(exc.hresult),
            )
            return KmsReply(hresult=exc.hresult)
        if not probe:  # a read works on a full or read-only disk: only a commit ends a fault
            self._storage.ok()
        if decision.refusal is not None:
            self._finish(
                self._log.debug if probe else self._log.warning,
                started,
                fields,
                app=assessment.app,
                group=group,
                code=decision.refusal.hresult,
                result="refused",
                observed_as="probe" if probe else "refused",
                hresult=_hex(decision.refusal.hresult),
                reason=decision.refusal.reason,
            )
            return KmsReply(hresult=decision.refusal.hresult)
        count = decision.count(
            tally, required=request.required_client_count, counting=self._config.counting
        )
        epid = self._epid(assessment)
        response = KmsResponse(
            version=request.version,
            epid=epid,
            client_machine_id=request.client_machine_id,
            response_time=request.request_time,
            current_client_count=count,
            activation_interval_min=self._config.host.activation_interval_min,
            renewal_interval_min=self._config.host.renewal_interval_min,
        )
        message = await self._sealer.run((opened, response))
        if rule is not None and rule.corrupt:
            message = corrupt(message, request.version, epid)
        self._finish(
            self._log.debug if probe else self._log.info,
            started,
            fields,
            app=assessment.app,
            group=group,
            code=0,
            result="probe" if probe else "activated",
            count=count,
            hresult=_hex(0),
            epid=epid,
        )
        if not probe:
            await self._note_count(assessment.app, tally, since=now - self._window)
        return KmsReply(message=message)

    def _unanswered(
        self,
        rule: ScenarioRule,
        fields: dict[str, Any],
        started: float,
        *,
        app: str,
        group: str | None,
    ) -> KmsReply:
        """A ``close`` or ``rpc_fault`` rule: answer before the table, recording nothing."""
        if rule.rpc_fault is not None:
            self._finish(
                self._log.warning,
                started,
                fields,
                app=app,
                group=group,
                code=rule.rpc_fault,
                result="faulted",
                fault_status=_hex(rule.rpc_fault),
            )
            return KmsReply(fault_status=rule.rpc_fault)
        self._finish(
            self._log.warning, started, fields, app=app, group=group, code=0, result="dropped"
        )
        return KmsReply(close=True)

    def _finish(
        self,
        emit: Callable[..., Any],
        started: float,
        fields: dict[str, Any],
        *,
        app: str | None,
        group: str | None,
        code: int,
        result: str,
        observed_as: str | None = None,
        count: int | None = None,
        **log_extra: Any,
    ) -> None:
        """Emit the call's one ``activation`` event and report the same outcome to the observer.

        ``code`` is the numeric HRESULT or fault status the observer counts; the event carries
        what ``log_extra`` gives (the hex ``hresult``, a ``reason``, ...). ``observed_as`` lets
        a refused probe be counted as ``probe`` while its event still says ``refused``.
        """
        latency = time.perf_counter() - started
        counted = {} if count is None else {"count": count}
        event = {
            **fields,
            "result": result,
            **counted,
            **log_extra,
            "latency_ms": round(latency * 1000, 3),
        }
        emit("activation", **event)
        self._observer.activation(
            ActivationOutcome(
                protocol=fields.get("protocol"),
                app=app,
                host_key_group=group,
                hresult=code,
                result=observed_as or result,
                latency_s=latency,
                count=count,
                event=event,
            )
        )

    def _epid(self, assessment: Assessment) -> str:
        if assessment.group is not None:
            return self._identity.epids[assessment.group.key]
        return self._identity.epids[self._catalog.fallback_group(self._scope).key]

    async def _note_count(self, app: str, tally: AppTally, *, since: datetime) -> None:
        counts = dict(self._counts)
        if self._store.changed_elsewhere():
            # ``kms-host clients forget/reset/seed`` wrote beside us: every cached count may be
            # stale, not only this app's. One reload, only after such a write.
            try:
                tallies = await self._store.tallies(since=since)
            except StorageError as exc:
                self._log.warning("counts_reload_failed", detail=str(exc))
            else:
                counts = self._counts_from(counts, tallies)
        counts[app] = self._current(tally)
        if counts != self._counts:
            self._counts = counts
            ordered = dict(sorted(counts.items()))
            self._log.info("counts", counts=ordered, changed=app)
            self._observer.counts(ordered)

    def _event_fields(self, opened: OpenedRequest, assessment: Assessment) -> dict[str, Any]:
        request = opened.request
        return {
            # The fields of a genuine host's event 12290 (kms-host-behaviour 2.6) ...
            "required_client_count": request.required_client_count,
            "machine_name": request.machine_name,
            "cmid": str(request.client_machine_id),
            "client_time": _client_time(request.request_time),
            "is_vm": bool(request.is_client_vm),
            "license_status": _license_status(request.license_status),
            "minutes_to_expiry": request.grace_time_min,
            "sku_id": str(request.sku_id),
            # ... and what a lab follows besides.
            "app": assessment.app,
            "kms_id": str(request.kms_counted_id),
            "product": assessment.product.name if assessment.product else None,
            "sku_name": assessment.sku.name if assessment.sku else None,
            "host_key_group": assessment.group.key if assessment.group else None,
            "protocol": f"{request.version.value}.0",
            "notes": list(assessment.notes),
        }


def _sighting(request: KmsRequest, decision: Decision, *, peer: str, seen_at: datetime) -> Sighting:
    """The client-table row for a request that was answered (refused or not)."""
    return Sighting(
        app=decision.assessment.app,
        cmid=request.client_machine_id,
        machine_name=request.machine_name,
        sku_id=request.sku_id,
        kms_id=request.kms_counted_id,
        license_status=request.license_status,
        is_vm=bool(request.is_client_vm),
        required_client_count=request.required_client_count,
        protocol_version=f"{request.version.value}.0",
        peer=peer,
        hresult=decision.refusal.hresult if decision.refusal else 0,
        seen_at=seen_at,
        counted=decision.refusal is None,
    )


def _peek(message: bytes) -> str | None:
    try:
        major, minor = peek_version(message)
    except KmsError:
        return None
    return f"{major}.{minor}"
