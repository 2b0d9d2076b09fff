"""A deterministic mutational fuzzer of client streams, seeded from the captured conversations.

Seeds are what real clients sent (``tests/vectors``, provenance in its README): the client side
of every captured connection, one PDU per read, and the hand-made malformed inputs with the
bind they were sent after. Case ``i`` of seed ``s`` is drawn from its own ``Random(f"{s}:{i}")``
so any one case replays without the ones before it.

Each case stacks one to three of these on a seed, then cuts the result into TCP writes:

* ``bit_flip``: up to 8 bits anywhere;
* ``insert`` / ``delete``: up to 16 bytes inside one PDU, half the time with that PDU's
  ``frag_length`` set to its new size so the body parsers, not the framer, see it;
* ``length``: one length or count field of one PDU set to an edge value. The fields and their
  offsets are those of the spec: common header ``frag_length`` (u16 at 8) and ``auth_length``
  (u16 at 10), section 1.2; bind/alter_context ``n_context_elem`` (u8 at 24) and each element's
  ``n_transfer_syn`` (u8 at element + 2), section 2.2; request ``alloc_hint`` (u32 at 16),
  section 3.2; the stub's ``requestSize`` (u32 at stub + 0, the KMS message's length) and
  ``max_count`` (NDR32: u32 at stub + 4; NDR64: u64 at stub + 8), sections 3.2.1 and 3.2.2;
* ``retype``: one PDU's type set to another of spec 1.3's table (alter_context, co_cancel,
  auth3, a server's or a connectionless type...) or to an unassigned one;
* ``fragment``: one request split into two to four fragments (spec 1.5: FIRST on the first,
  LAST on the last, the stub's total in the first ``alloc_hint``), now and then with a
  fragment's call_id or flags changed so that calls interleave, restart or never finish;
* ``truncate``: the stream cut at any byte;
* ``splice``: a head of one conversation and a tail of another, cut at PDU bounds or anywhere;
* ``kms_fields``: one request's KMS message replaced by a base request (spec 4.2) with one to
  three of its fields set to edge values (or its length changed), then sealed as its version
  seals it (spec 4.3, 4.4) and wrapped with consistent NDR and PDU lengths, so that the
  fields reach the parser and the policy instead of failing the MAC or the padding. (The
  sealing uses ``protocol``'s own primitives: they make inputs here, never expected bytes.)
* none of them (one case in eight): a valid conversation, only chunked and half the time
  half-closed after its last PDU, so that neither ever breaks a good client (spec 1.1: any
  PDU may arrive split or coalesced).

A case that the host can answer whole leaves the connection open for the next case; one that
ends inside a PDU usually half-closes (the host must close at once), and a few stay silent, so
that the host's idle timeout has to end them.
"""

from __future__ import annotations

import dataclasses
import json
import random
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reliability_host import request

from protocol.kms import ProtocolVersion, v4_mac
from protocol.kms._primitives import seal_envelope
from protocol.kms.codec import build_request

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
CONVERSATION_FILES = ("vlmcsd-conversations.jsonl", "pykms-conversations.jsonl")

# Spec 1.2 / 1.3 / 1.4.
HEADER = 16
BIND, ALTER_CONTEXT, REQUEST = 0x0B, 0x0E, 0x00
IGNORED = frozenset({0x12, 0x13})  # co_cancel, orphaned: no answer (spec 1.3)
FIRST_FRAG, LAST_FRAG, OBJECT_UUID = 0x01, 0x02, 0x80
PTYPES = (*range(0x14), 0x7F, 0xFF)  # spec 1.3's 0x00..0x13, and two it does not assign
REQUEST_HEADER = 24  # spec 3.2
FIRST_CONTEXT = 28  # spec 2.2: p_cont_elem[0]
ELEMENT_HEADER, TRANSFER_SYNTAX = 24, 20

# Spec 4.2: the base request's fields (offset, size).
BASE_FIELDS = (
    ("version", 0, 4),
    ("is_client_vm", 4, 4),
    ("license_status", 8, 4),
    ("grace_time", 12, 4),
    ("application_id", 16, 16),
    ("sku_id", 32, 16),
    ("kms_counted_id", 48, 16),
    ("client_machine_id", 64, 16),
    ("required_client_count", 80, 4),
    ("request_time", 84, 8),
    ("previous_client_machine_id", 92, 16),
    ("machine_name", 108, 128),
)
BASE_SIZE = 236
VERSIONS = {4: ProtocolVersion.V4, 5: ProtocolVersion.V5, 6: ProtocolVersion.V6}

SILENT_SHARE = 0.05
"""Of the cases ending inside a PDU, those that do not half-close: each costs an idle timeout."""


@dataclass(frozen=True)
class Case:
    """One fuzz case: the writes to make, in order, and what was done to the seed."""

    index: int
    writes: tuple[bytes, ...]
    operations: tuple[str, ...]
    half_close: bool
    valid: bool
    """A captured conversation, unchanged but for its cutting into writes."""

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)


@dataclass(frozen=True)
class Field:
    """A length or count field: where it is in its PDU, and its width in bytes."""

    name: str
    offset: int
    width: int


_FORMAT = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}


def load_conversations() -> list[tuple[bytes, ...]]:
    """Every captured connection's client PDUs: what a good client sends."""
    seeds: list[tuple[bytes, ...]] = []
    for name in CONVERSATION_FILES:
        for line in (VECTORS / name).read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            connections: dict[int, list[bytes]] = {}
            for exchange in record["exchanges"]:
                if exchange["dir"] == "c2s":
                    conn = connections.setdefault(exchange.get("conn", 1), [])
                    conn.append(bytes.fromhex(exchange["hex"]))
            seeds += [tuple(pdus) for pdus in connections.values()]
    return seeds


def load_malformed() -> list[tuple[bytes, ...]]:
    """Each hand-made malformed input, after the bind it was sent after (if any)."""
    seeds = []
    for line in (VECTORS / "malformed.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        pdus = [bytes.fromhex(record.get("preamble_hex") or ""), bytes.fromhex(record["hex"])]
        seeds.append(tuple(pdu for pdu in pdus if pdu))
    return [seed for seed in seeds if seed]


def length_fields(pdu: bytes) -> list[Field]:
    """The length and count fields of one client PDU that are present in its bytes."""
    fields = [Field("frag_length", 8, 2), Field("auth_length", 10, 2)]
    if len(pdu) < HEADER:
        return [f for f in fields if f.offset + f.width <= len(pdu)]
    ptype, flags = pdu[2], pdu[3]
    if ptype in (BIND, ALTER_CONTEXT) and len(pdu) > 24:
        fields.append(Field("n_context_elem", 24, 1))
        offset = FIRST_CONTEXT
        for _ in range(pdu[24]):
            if offset + ELEMENT_HEADER > len(pdu):
                break
            fields.append(Field("n_transfer_syn", offset + 2, 1))
            offset += ELEMENT_HEADER + TRANSFER_SYNTAX * pdu[offset + 2]
    elif ptype == REQUEST and len(pdu) >= 20:
        fields.append(Field("alloc_hint", 16, 4))
        stub = REQUEST_HEADER + (16 if flags & OBJECT_UUID else 0)
        if len(pdu) >= stub + 16:
            (size,) = struct.unpack_from("<I", pdu, stub)
            ndr32 = struct.unpack_from("<I", pdu, stub + 4)[0] == size
            fields += [
                Field("request_size", stub, 4),
                Field("max_count", stub + 4, 4) if ndr32 else Field("max_count", stub + 8, 8),
            ]
    return [f for f in fields if f.offset + f.width <= len(pdu)]


def edge_values(value: int, width: int, rng: random.Random) -> int:
    """An edge value for a field holding ``value``: off by one, zero, halved, doubled, max..."""
    top = (1 << (8 * width)) - 1
    choices = [0, 1, value - 1, value + 1, value // 2, value * 2, top, top - 1, top >> 1]
    choices += [HEADER - 1, HEADER, 4096, 4097, rng.randrange(top + 1)]  # 4096: the PDU cap
    return rng.choice(choices) & top


def set_frag_length(pdu: bytearray) -> None:
    if len(pdu) >= 10:
        struct.pack_into("<H", pdu, 8, min(len(pdu), 0xFFFF))


@dataclass(frozen=True)
class Framing:
    """How a host that follows spec 1.1 frames a case's bytes."""

    answers: int
    """PDUs it answers: one per bind, alter_context and last-fragment request."""
    closes: bool
    """A bad length, a type a client never sends or bytes left inside a PDU: the host closes
    (at once, at the half-close, or at its idle timeout)."""
    call_ids: frozenset[int]
    """The call_id of every PDU it reads a header of: all that a reply may echo (spec 1.2)."""


def frame(data: bytes, max_pdu_bytes: int) -> Framing:
    """Frame ``data`` as spec 1.1 says: ``frag_length`` decides where each PDU ends.

    Only a guide for when a case has been answered, and for what replies may carry.
    """
    answers, at, call_ids = 0, 0, set()
    while at + HEADER <= len(data):
        length, call_id = struct.unpack_from("<H2xI", data, at + 8)
        call_ids.add(call_id)
        if length < HEADER or length > max_pdu_bytes or at + length > len(data):
            break
        ptype, flags = data[at + 2], data[at + 3]
        if ptype in (BIND, ALTER_CONTEXT) or (ptype == REQUEST and flags & LAST_FRAG):
            answers += 1
        elif ptype != REQUEST and ptype not in IGNORED:
            break
        at += length
    return Framing(answers, at < len(data), frozenset(call_ids))


class Mutator:
    """Case ``i`` of a given seed, always the same bytes and the same writes."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.conversations = load_conversations()
        self.seeds = self.conversations + load_malformed()
        self._operations: dict[str, Callable[[random.Random, list[bytearray]], None]] = {
            "bit_flip": self._bit_flip,
            "insert": self._insert,
            "delete": self._delete,
            "length": self._length,
            "retype": self._retype,
            "fragment": self._fragment,
            "truncate": self._truncate,
            "splice": self._splice,
            "kms_fields": self._kms_fields,
        }

    def case(self, index: int) -> Case:
        rng = random.Random(f"{self.seed}:{index}")
        pick = rng.randrange(len(self.seeds))
        pdus = [bytearray(pdu) for pdu in self.seeds[pick]]
        done: list[str] = []
        if rng.random() >= 1 / 8:
            for name in rng.choices(list(self._operations), k=rng.randint(1, 3)):
                self._operations[name](rng, pdus)
                done.append(name)
        data = b"".join(pdus)
        if done:
            half_close = frame(data, 0xFFFF).closes and rng.random() >= SILENT_SHARE
        else:  # a good client may half-close after its last request: all are answered first
            half_close = rng.random() < 0.5
        valid = not done and pick < len(self.conversations)
        return Case(index, tuple(_chunks(rng, data)), tuple(done), half_close, valid)

    # --- the operations: each changes ``pdus`` in place -----------------------------------

    @staticmethod
    def _pick(rng: random.Random, pdus: list[bytearray]) -> bytearray:
        return rng.choice([pdu for pdu in pdus if pdu] or [pdus[0]])

    def _bit_flip(self, rng: random.Random, pdus: list[bytearray]) -> None:
        for _ in range(rng.randint(1, 8)):
            pdu = self._pick(rng, pdus)
            if pdu:
                bit = rng.randrange(len(pdu) * 8)
                pdu[bit // 8] ^= 1 << (bit % 8)

    def _insert(self, rng: random.Random, pdus: list[bytearray]) -> None:
        pdu = self._pick(rng, pdus)
        at = rng.randint(0, len(pdu))
        pdu[at:at] = rng.randbytes(rng.randint(1, 16))
        if rng.random() < 0.5:
            set_frag_length(pdu)

    def _delete(self, rng: random.Random, pdus: list[bytearray]) -> None:
        pdu = self._pick(rng, pdus)
        if pdu:
            at = rng.randrange(len(pdu))
            del pdu[at : at + rng.randint(1, 16)]
            if rng.random() < 0.5:
                set_frag_length(pdu)

    def _length(self, rng: random.Random, pdus: list[bytearray]) -> None:
        pdu = self._pick(rng, pdus)
        fields = length_fields(bytes(pdu))
        if fields:
            field = rng.choice(fields)
            fmt = _FORMAT[field.width]
            (value,) = struct.unpack_from(fmt, pdu, field.offset)
            struct.pack_into(fmt, pdu, field.offset, edge_values(value, field.width, rng))

    def _retype(self, rng: random.Random, pdus: list[bytearray]) -> None:
        pdu = self._pick(rng, pdus)
        if len(pdu) > 2:
            pdu[2] = rng.choice(PTYPES)

    def _fragment(self, rng: random.Random, pdus: list[bytearray]) -> None:
        found = [(i, at) for i, pdu in enumerate(pdus) if (at := request_stub(pdu))]
        if not found:
            return
        index, (offset, _) = rng.choice(found)
        header, data = pdus[index][:offset], pdus[index][offset:]
        cuts = sorted(rng.sample(range(len(data) + 1), rng.randint(1, 3)))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        fragments = []
        for n, piece in enumerate(pieces):
            fragment = bytearray(header) + piece
            flags = fragment[3] & ~(FIRST_FRAG | LAST_FRAG)
            flags |= (FIRST_FRAG if n == 0 else 0) | (LAST_FRAG if n == len(pieces) - 1 else 0)
            fragment[3] = flags ^ (rng.choice((FIRST_FRAG, LAST_FRAG)) if rng.random() < 0.1 else 0)
            struct.pack_into("<I", fragment, 16, len(data) if n == 0 else len(data) - cuts[n - 1])
            if rng.random() < 0.1:
                struct.pack_into("<I", fragment, 12, rng.randrange(4))  # another call's id
            set_frag_length(fragment)
            fragments.append(fragment)
        pdus[index : index + 1] = fragments

    def _truncate(self, rng: random.Random, pdus: list[bytearray]) -> None:
        data = b"".join(pdus)
        pdus[:] = [bytearray(data[: rng.randint(0, max(len(data) - 1, 0))])]

    def _splice(self, rng: random.Random, pdus: list[bytearray]) -> None:
        other = [bytearray(pdu) for pdu in rng.choice(self.seeds)]
        if rng.random() < 0.5:  # at PDU bounds: a conversation that changes course
            pdus[:] = pdus[: rng.randint(1, len(pdus))] + other[rng.randrange(len(other)) :]
        else:
            head, tail = b"".join(pdus), b"".join(other)
            cut, rest = rng.randint(0, len(head)), rng.randrange(len(tail))
            pdus[:] = [bytearray(head[:cut] + tail[rest:])]

    def _kms_fields(self, rng: random.Random, pdus: list[bytearray]) -> None:
        found = [(i, stub) for i, pdu in enumerate(pdus) if (stub := request_stub(pdu))]
        if not found:
            return
        index, (offset, ndr32) = rng.choice(found)
        pdu = pdus[index]
        major = pdu[offset + (8 if ndr32 else 16) + 2 :][:1]
        version = VERSIONS.get(major[0] if major else 0) or rng.choice(list(VERSIONS.values()))
        message = sealed_request(rng, version)
        header = bytearray(pdu[:offset])
        struct.pack_into("<I", header, 16, (8 if ndr32 else 16) + len(message))  # alloc_hint
        sizes = (
            struct.pack("<II", len(message), len(message))
            if ndr32
            else struct.pack("<IIQ", len(message), 0, len(message))
        )
        pdus[index] = header + sizes + message
        set_frag_length(pdus[index])


def request_stub(pdu: bytes | bytearray) -> tuple[int, bool] | None:
    """Where a request PDU's stub starts and whether it is NDR32 (spec 3.2), if it has one."""
    if len(pdu) < HEADER or pdu[2] != REQUEST:
        return None
    stub = REQUEST_HEADER + (16 if pdu[3] & OBJECT_UUID else 0)
    if len(pdu) < stub + 16:
        return None
    (size,) = struct.unpack_from("<I", pdu, stub)
    return stub, struct.unpack_from("<I", pdu, stub + 4)[0] == size


def sealed_request(rng: random.Random, version: ProtocolVersion) -> bytes:
    """A KMS request of ``version`` whose plaintext has edge values in a few fields."""
    cmid = uuid.UUID(int=rng.getrandbits(128))
    good = dataclasses.replace(
        request(cmid, version),
        required_client_count=25,
        request_time=0x01DD_0000_0000_0000 + rng.getrandbits(48),
        machine_name=f"fuzz-{rng.getrandbits(32):08x}.lab.example",
    )
    base = bytearray(build_request(good))
    for name, offset, size in rng.sample(BASE_FIELDS, rng.randint(1, 3)):
        base[offset : offset + size] = _field_value(rng, name, base[offset : offset + size])
    if rng.random() < 1 / 8:
        cut = rng.randint(0, BASE_SIZE + 32)
        base = base[:cut] + bytearray(rng.randbytes(max(cut - BASE_SIZE, 0)))
    if version == ProtocolVersion.V4:
        return bytes(base) + v4_mac(bytes(base))
    return seal_envelope(version, rng.randbytes(16), bytes(base))


def _field_value(rng: random.Random, name: str, value: bytearray) -> bytes:
    size = len(value)
    style = rng.randrange(4)
    if name == "machine_name" and style == 0:  # UTF-16 code units, lone surrogates, no NUL
        draws = ((rng.randrange(0xD800, 0xE000), rng.randrange(1, 0x10000)) for _ in value[1::2])
        units = [rng.choice(pair) for pair in draws]
        return struct.pack(f"<{size // 2}H", *units)
    if style == 1:
        return bytes(size)
    if style == 2:
        return b"\xff" * size
    if size in _FORMAT and style == 3:
        (current,) = struct.unpack(_FORMAT[size], value)
        return struct.pack(_FORMAT[size], edge_values(current, size, rng))
    return rng.randbytes(size)


def _chunks(rng: random.Random, data: bytes) -> list[bytes]:
    """Random TCP writes: whole, one byte at a time, or cut at a few random points."""
    style = rng.random()
    if style < 0.3 or len(data) < 2:
        return [data] if data else []
    if style < 0.4:  # the first bytes one by one: every header field split from the next
        ones = rng.randint(2, min(len(data), 40))
        return [data[i : i + 1] for i in range(ones)] + ([data[ones:]] if data[ones:] else [])
    cuts = sorted(rng.sample(range(1, len(data)), min(rng.randint(1, 6), len(data) - 1)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
