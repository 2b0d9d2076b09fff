"""Scenario rules: make the host misbehave on purpose, so that clients' unhappy paths get tested.

A lab declares ``[[scenario]]`` tables. Each has match keys, all of which
must hold, and actions::

    [[scenario]]
    sku = "2de67392-b7a7-462a-b1ca-108dd189f588"   # match: Windows 10/11 Pro ...
    hresult = "0xC004F042"                         # ... is refused as outside the host key

Match keys: ``cmid``, ``kms_id``, ``sku`` (GUIDs), ``app`` (a catalog application key such as
"windows", or its GUID), ``machine_name`` (a case-insensitive glob), ``peer`` (a CIDR) and
``protocol`` (4, 5 or 6). Actions: ``hresult`` (answer that HRESULT), ``count`` (report that
count), ``delay_ms`` (answer that much later), ``close`` (drop the connection unanswered),
``rpc_fault`` (answer an RPC fault with that status), ``corrupt`` (break the response's
integrity check, below), and ``every = k`` (act on every k-th matching request only).

Theory of operation:

* **First match wins.** Rules are tried in file order; the first whose keys all hold claims
  the request and counts it. With ``every = k`` it acts on its k-th, 2k-th, ... claimed
  request; the others are served normally and do *not* fall through to later rules, so one
  rule's cadence never depends on the rules around it.
* **The probe is exempt.** ``kms-host probe``'s reserved CMID is matched only by a rule that
  names it in ``cmid``: a health check must neither trigger a rule meant for clients nor
  advance its ``every`` counter.
* **Where actions apply** (in :func:`kms_host.policy.activation.decide` and
  :mod:`kms_host.host.service`, after the request is opened and assessed): ``delay_ms``
  first; ``hresult`` then answers like a refusal (recorded, not counted, and it overrides the
  host's own verdict); ``close`` and ``rpc_fault`` answer before the client table is touched,
  as the daemon's own faults do, so nothing is recorded;
  ``count`` and ``corrupt`` alter a sealed response of an activation that was recorded and
  counted as usual (a request the host refuses keeps its refusal). Every applied rule shows
  in the ``activation`` event as ``scenario_rule`` (its index) and ``scenario_actions``.
* **Reload.** :class:`ScenarioBook` holds the rules and their counters; SIGHUP re-reads the
  config file's ``[[scenario]]`` tables and swaps both in one assignment (counters restart),
  or logs why not and keeps the old rules (:mod:`kms_host.host.reload`).

``corrupt`` breaks exactly the integrity check of each version, so that a strict client
(spec 5.7) fails on that check while everything before it still verifies:

* V4 (spec 4.6): the low bit of the MAC's last byte is flipped. The base response is
  intact; V4MAC(base) no longer matches.
* V5 (spec 4.7): one bit is flipped in the first ciphertext block lying wholly inside
  RandomXoredIVs ‖ Hash. CBC decrypts that block to garbage and flips one bit of the next,
  both inside those 48 bytes, so the base response and the padding decrypt intact and
  SHA-256(RandomXoredIVs ⊕ Dc) ≠ Hash. (V5 has no MAC: the hash is its only check.)
* V6 (spec 4.8): the low bit of the response IV's byte 8 is flipped. Decryption then yields
  the same payload except the ePID's first character, a digit that becomes another digit,
  and Ds = D_K6(IV) changes entirely, so every check passes but the HMAC: exactly the
  tampering the HMAC exists to catch.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from kms_host.converters import boolean, integer
from kms_host.errors import ConfigError
from kms_host.policy.catalog_file import load_catalog
from protocol.kms import ProtocolVersion

__all__ = [
    "ScenarioBook",
    "ScenarioRule",
    "Subject",
    "corrupt",
    "first_match",
    "log_fields",
    "parse_scenarios",
]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_U32: Final = 0xFFFFFFFF
_MAX_DELAY_MS: Final = 300_000
_BLOCK: Final = 16
_ENVELOPE: Final = 20  # version word + IV in front of a V5/V6 ciphertext (spec 4.7, 4.8)


@dataclass(frozen=True, slots=True)
class Subject:
    """What rules match on: the opened request, its counting pool, the peer."""

    cmid: uuid.UUID
    machine_name: str
    app: str
    """The catalog application key, or the application GUID when the catalog lacks it."""
    application_id: uuid.UUID
    kms_id: uuid.UUID
    sku: uuid.UUID
    peer: str
    """``ip:port`` (``[ip]:port`` for IPv6), as the session renders it."""
    protocol: int
    probe: bool
    """The request carries ``kms-host probe``'s reserved CMID."""


@dataclass(frozen=True, slots=True)
class ScenarioRule:
    """One ``[[scenario]]`` table: match keys (None = any) and actions."""

    index: int
    """Position in the file, as in the ``scenario[index]`` of error keys and logs."""
    cmid: uuid.UUID | None = None
    machine_name: str | None = None
    app: str | None = None
    kms_id: uuid.UUID | None = None
    sku: uuid.UUID | None = None
    peer: _Network | None = None
    protocol: int | None = None
    hresult: int | None = None
    count: int | None = None
    delay_ms: int = 0
    close: bool = False
    rpc_fault: int | None = None
    corrupt: bool = False
    every: int = 1

    def matches(self, subject: Subject) -> bool:
        """True when every match key of this rule holds for ``subject``."""
        if subject.probe and self.cmid != subject.cmid:
            return False
        return (
            (self.cmid is None or self.cmid == subject.cmid)
            and (self.kms_id is None or self.kms_id == subject.kms_id)
            and (self.sku is None or self.sku == subject.sku)
            and (self.protocol is None or self.protocol == subject.protocol)
            and (self.app is None or self.app in (subject.app, str(subject.application_id)))
            and (
                self.machine_name is None
                or fnmatch.fnmatchcase(subject.machine_name.lower(), self.machine_name)
            )
            and (self.peer is None or _peer_in(subject.peer, self.peer))
        )

    @property
    def actions(self) -> dict[str, object]:
        """The actions this rule takes, as the ``activation`` event shows them."""
        taken: dict[str, object] = {
            "hresult": None if self.hresult is None else f"0x{self.hresult:08X}",
            "count": self.count,
            "delay_ms": self.delay_ms or None,
            "close": self.close or None,
            "rpc_fault": None if self.rpc_fault is None else f"0x{self.rpc_fault:08X}",
            "corrupt": self.corrupt or None,
            "every": self.every if self.every > 1 else None,
        }
        return {name: value for name, value in taken.items() if value is not None}


def _peer_in(peer: str, network: _Network) -> bool:
    host = peer.rpartition(":")[0].strip("[]")
    try:
        return ipaddress.ip_address(host) in network
    except ValueError:  # "unknown": a peer without an address matches no CIDR
        return False


def first_match(rules: Sequence[ScenarioRule], subject: Subject) -> int | None:
    """The position of the first rule matching ``subject`` (pure: no counters touched)."""
    return next((i for i, rule in enumerate(rules) if rule.matches(subject)), None)


class ScenarioBook:
    """The installed rules and their ``every`` counters; one per running host.

    Rules and counters are replaced together by one assignment, so a request is always
    judged by one consistent set (the event loop runs :meth:`select` without yielding).
    """

    rules: tuple[ScenarioRule, ...]
    """The rules in force: a plain attribute, so that a host without rules runs no code here."""

    def __init__(self, rules: Sequence[ScenarioRule] = ()) -> None:
        self.rules = ()
        self._counters: list[int] = []
        self.install(rules)

    def install(self, rules: Sequence[ScenarioRule]) -> None:
        """Replace the rules; every counter restarts at zero (no await between the two)."""
        self.rules, self._counters = tuple(rules), [0] * len(rules)

    def select(self, subject: Subject) -> ScenarioRule | None:
        """The rule to apply to this request, counting it for the rule that claims it."""
        rules, counters = self.rules, self._counters
        index = first_match(rules, subject)
        if index is None:
            return None
        counters[index] += 1
        rule = rules[index]
        return rule if counters[index] % rule.every == 0 else None


def log_fields(rule: ScenarioRule | None) -> dict[str, Any]:
    """The ``activation`` event fields naming the applied rule (none when no rule applied)."""
    if rule is None:
        return {}
    return {"scenario_rule": rule.index, "scenario_actions": rule.actions}


def corrupt(message: bytes, version: ProtocolVersion, epid: str) -> bytes:
    """Break the integrity check of a sealed response, as the module docstring details."""
    data = bytearray(message)
    if version == ProtocolVersion.V4:
        data[-1] ^= 0x01
    elif version == ProtocolVersion.V5:
        pid_size = (len(epid) + 1) * 2
        first_tail_block = -(-(44 + pid_size) // _BLOCK)  # ceil: RandomXoredIVs starts at 44+P
        data[_ENVELOPE + first_tail_block * _BLOCK] ^= 0x01
    else:
        data[4 + 8] ^= 0x01
    return bytes(data)


# --- parsing ---------------------------------------------------------------------------------


def _guid(value: object) -> uuid.UUID:
    if not isinstance(value, str):
        raise ValueError(f"expected a GUID string, got {value!r}")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a GUID") from None


def _glob(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty glob such as 'lab-*', got {value!r}")
    return value.lower()


def _app(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected an application key or GUID, got {value!r}")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        pass
    keys = sorted(app.key for app in load_catalog().applications.values())
    if value.lower() not in keys:
        raise ValueError(f"unknown application {value!r} (known: {', '.join(keys)}, or a GUID)")
    return value.lower()


def _network(value: object) -> _Network:
    if not isinstance(value, str):
        raise ValueError(f"expected a CIDR such as '10.0.0.0/8', got {value!r}")
    return ipaddress.ip_network(value, strict=False)


def _protocol(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in (4, 5, 6):
        raise ValueError(f"expected 4, 5 or 6, got {value!r}")
    return value


def _status(value: object) -> int:
    """A non-zero 32-bit code, as a number or a "0x..." string (HRESULTs read best in hex)."""
    if isinstance(value, str):
        try:
            value = int(value, 0)
        except ValueError:
            raise ValueError(f"expected a number such as '0xC004F042', got {value!r}") from None
    return integer(1, _U32)(value)


_KEYS: Final[Mapping[str, Callable[[object], Any]]] = {
    "cmid": _guid,
    "machine_name": _glob,
    "app": _app,
    "kms_id": _guid,
    "sku": _guid,
    "peer": _network,
    "protocol": _protocol,
    "hresult": _status,
    "count": integer(0, _U32),
    "delay_ms": integer(0, _MAX_DELAY_MS),
    "close": boolean,
    "rpc_fault": _status,
    "corrupt": boolean,
    "every": integer(1, 1_000_000),
}
_ANSWERS: Final = ("hresult", "close", "rpc_fault")
"""Actions that replace the answer: at most one per rule, and none beside count/corrupt."""


def _rule(index: int, table: object) -> ScenarioRule:
    where = f"scenario[{index}]"
    if not isinstance(table, dict):
        raise ConfigError(f"expected a [[scenario]] table, got {table!r}", where)
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key not in _KEYS:
            known = ", ".join(_KEYS)
            raise ConfigError(f"unknown key (known: {known})", f"{where}.{key}")
        try:
            values[key] = _KEYS[key](raw)
        except ValueError as exc:
            raise ConfigError(str(exc), f"{where}.{key}") from None
    rule = ScenarioRule(index, **values)
    answers = [name for name in _ANSWERS if name in rule.actions]
    if len(answers) > 1:
        raise ConfigError(f"{' and '.join(answers)} exclude each other", where)
    altered = [name for name in ("count", "corrupt") if name in rule.actions]
    if answers and altered:
        raise ConfigError(f"{altered[0]} needs a response, which {answers[0]} replaces", where)
    if not set(rule.actions) - {"every"}:
        actions = "hresult, count, delay_ms, close, rpc_fault or corrupt"
        raise ConfigError(f"no action: give {actions}", where)
    return rule


def parse_scenarios(raw: object) -> tuple[ScenarioRule, ...]:
    """Validate ``[[scenario]]`` tables; ConfigError keys read like ``scenario[2].hresult``."""
    if not isinstance(raw, list):
        raise ConfigError("scenario rules are an array of tables: write [[scenario]]", "scenario")
    return tuple(_rule(index, table) for index, table in enumerate(raw))
