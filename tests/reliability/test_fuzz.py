"""Mutated client streams over real TCP: the daemon survives every one and still activates.

One daemon (``kms-host serve``, one process) takes the cases of :mod:`mutator` from a few
concurrent fuzz clients. A client keeps its connection while the host answers its cases, and
connects again once the host closed it, so most cases after a good one meet an association
that already exists (spec 1.1: any number of calls per connection). Each case ends when the
host has answered every PDU it could answer (:func:`mutator.frame`) or has closed; a case
that gets neither within ``HANG_S`` of its last byte is a hang: by then the host's idle
timeout (``IDLE_TIMEOUT_S``, spec 1.1) should have closed the connection.

During and after the run:

* the process never exits (polled with every RSS sample);
* its log has no traceback: no event with an ``exception`` field (structlog's rendering of
  ``exc_info``), none at level ``error`` or ``critical``, and no line that is not JSON (what
  an uncaught exception would print on the merged stderr);
* a valid conversation on a new connection, however chunked and whether or not it
  half-closes after its last PDU, gets every answer (spec 1.1);
* every reply is a server PDU of spec 1.2 / 1.3: version 5, little-endian data
  representation, a server-to-client type, FIRST and LAST set (1.4), no auth verifier, the
  call_id of a PDU the connection sent, ``frag_length`` consistent with the bytes, the stream
  ending on a PDU boundary; a fault is 32 bytes with flags 0x23 (3.5), a response's
  ``alloc_hint`` is its stub's length (3.6);
* VmHWM stays within ``RSS_GROWTH_BYTES`` of the VmRSS after a first activation;
* once the fuzz clients are gone, the open fds return to their count before the run, and a
  strict client (every answer checked as Windows checks it, spec 5.7) activates.

CI runs ``CI_CASES``; ``-m long`` runs ``LONG_CASES``. ``KMS_HOST_RELIABILITY_SEED`` replays
a run; a failure names its seed and the failing cases' indices and operations.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import struct
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mutator import HEADER, Case, Mutator, frame
from reliability_host import Daemon, request

from kms_host.client.strict import KmsClient

CI_CASES = 3000
LONG_CASES = 100_000
CLIENTS = 8
"""Fuzz connections at once: the host interleaves their cases."""
IDLE_TIMEOUT_S = 1
"""The host's ``[server] idle_timeout_s``: the smallest allowed, so a silent case costs 1 s."""
HANG_S = IDLE_TIMEOUT_S + 9.0
"""How long a case may go without an answer or a close: the idle timeout plus room for a
loaded two-core machine."""
MAX_PDU_BYTES = 4096
"""The host's ``[server] max_pdu_bytes`` default: the frame guide needs it."""
RSS_GROWTH_BYTES = 48 * 2**20
"""Peak RSS allowed above the RSS after the first activation. What the host may hold for its
input is capped per connection (``max_pdu_bytes`` for a PDU, 64 KiB for the stubs of
unfinished fragmented calls), under 1 MiB for ``CLIENTS`` connections; the rest is room for
the allocator's and SQLite's caches. A leak of a few hundred bytes per case would cross it
in the long run."""
SAMPLE_S = 0.25

SERVER_PTYPES = frozenset({0x02, 0x03, 0x0C, 0x0D, 0x0F})  # spec 1.3: S->C types
RESPONSE, FAULT = 0x02, 0x03
FIRST_AND_LAST = 0x03  # spec 1.4: set on every PDU sent
FAULT_SIZE, FAULT_FLAGS = 32, 0x23  # spec 3.5: 32 bytes, FIRST | LAST | DID_NOT_EXECUTE
DREP = b"\x10\x00\x00\x00"  # spec 1.2


def seed() -> int:
    return int(os.environ.get("KMS_HOST_RELIABILITY_SEED", str(random.randrange(2**32))))


def notable(event: dict[str, Any]) -> bool:
    """The events held in full: what the checks and ``port()`` need; the rest is tallied."""
    return (
        "exception" in event
        or event.get("level") in ("error", "critical")
        or event["event"] in ("listening", "stopped")
    )


@dataclass
class Tally:
    cases: int = 0
    answered: int = 0
    """Cases the host answered whole, keeping the connection for the next."""
    closed: int = 0
    """Cases after which the host closed (or reset) the connection."""
    connections: int = 0
    replies: int = 0
    hangs: list[str] = field(default_factory=list)
    wire: list[str] = field(default_factory=list)
    """Replies that are not server PDUs of spec 1.2 / 1.3."""
    peak_rss: int = 0
    peak_hwm: int = 0
    peak_fds: int = 0
    samples: int = 0
    died: bool = False


def status(pid: int) -> tuple[int, int, int]:
    """VmRSS and VmHWM in bytes, and the open fds, of a live process."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    kib = {name: int(fields[name].split()[0]) * 1024 for name in ("VmRSS", "VmHWM")}
    return kib["VmRSS"], kib["VmHWM"], len(os.listdir(f"/proc/{pid}/fd"))


def check_replies(
    data: bytes, case: Case, call_ids: set[int], wire: list[str] | None = None
) -> tuple[int, int]:
    """The whole reply PDUs in ``data`` and where they end, noting in ``wire`` any reply
    that breaks spec 1.2 / 1.3 or echoes a call_id the connection never sent."""
    count, at = 0, 0
    while at + HEADER <= len(data):
        header = data[at : at + HEADER]
        length, auth, call_id = struct.unpack_from("<HHI", header, 8)
        whole = length >= HEADER and at + length <= len(data)
        if wire is not None and (
            header[0] != 5
            or header[2] not in SERVER_PTYPES
            or header[3] & FIRST_AND_LAST != FIRST_AND_LAST
            or header[4:8] != DREP
            or auth
            or call_id not in call_ids
            or (header[2] == FAULT and (length != FAULT_SIZE or header[3] != FAULT_FLAGS))
            or (whole and header[2] == RESPONSE and not _alloc_hint_is_stub(data[at:][:length]))
        ):
            wire.append(f"case {case.index} {case.operations}: reply {data[at:][:32].hex()}")
        if not whole:
            break
        count, at = count + 1, at + length
    return count, at


def _alloc_hint_is_stub(pdu: bytes) -> bool:
    """Spec 3.6 step 5: a response's ``alloc_hint`` is its stub's length."""
    return len(pdu) >= 24 and struct.unpack_from("<I", pdu, 16)[0] == len(pdu) - 24


class Connection:
    """One fuzz client's connection; ``closed`` once the host ended it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.closed = False
        self.call_ids: set[int] = set()
        """Every call_id this connection sent: what its replies may echo."""

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def send(self, case: Case) -> None:
        try:
            for write in case.writes:
                self.writer.write(write)
                await self.writer.drain()
            if case.half_close:
                self.writer.write_eof()
        except (OSError, RuntimeError):
            pass  # the host closed part way: its reads tell the rest

    async def replies(self, case: Case, tally: Tally) -> None:
        """Read until every answer the host owes has come, or it closed; else a hang."""
        framing = frame(case.data, MAX_PDU_BYTES)
        fresh = not self.call_ids
        self.call_ids |= framing.call_ids
        data = b""
        until_closed = framing.closes or case.half_close
        while until_closed or check_replies(data, case, self.call_ids)[0] < framing.answers:
            try:
                chunk = await asyncio.wait_for(self.reader.read(65536), HANG_S)
            except TimeoutError:
                tally.hangs.append(f"case {case.index} {case.operations}, {len(data)} bytes back")
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                break
            data += chunk
        count, end = check_replies(data, case, self.call_ids, tally.wire)
        tally.replies += count
        if fresh and case.valid and count != framing.answers:
            tally.wire.append(f"case {case.index}: a valid conversation got {count} replies")
        if self.closed and end != len(data):
            tally.wire.append(f"case {case.index} {case.operations}: {len(data) - end} bytes left")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def fuzz_client(port: int, mutator: Mutator, cases: list[int], tally: Tally) -> None:
    connection: Connection | None = None
    for index in cases:
        case = mutator.case(index)
        if connection is None:
            connection = await Connection.open(port)
            tally.connections += 1
        await connection.send(case)
        hangs = len(tally.hangs)
        await connection.replies(case, tally)
        tally.cases += 1
        if connection.closed or len(tally.hangs) > hangs:
            tally.closed += connection.closed
            await connection.close()
            connection = None
        else:
            tally.answered += 1
    if connection is not None:
        await connection.close()


async def monitor(daemon: Daemon, tally: Tally, stop: asyncio.Event) -> None:
    pid = daemon.process.pid
    while not stop.is_set():
        if daemon.process.poll() is not None:
            tally.died = True
            return
        rss, hwm, fds = status(pid)
        tally.peak_rss, tally.peak_hwm = max(tally.peak_rss, rss), max(tally.peak_hwm, hwm)
        tally.peak_fds, tally.samples = max(tally.peak_fds, fds), tally.samples + 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_S)


async def activate(port: int) -> None:
    """A valid activation by the strict client: it must succeed."""
    cmid = uuid.uuid4()
    async with await KmsClient.connect("127.0.0.1", port) as client:
        result = await client.activate(request(cmid))
    assert result.hresult == 0
    assert result.response is not None
    assert result.response.client_machine_id == cmid


async def fds_settle(pid: int, baseline: int) -> int:
    """The daemon's open fds once the fuzz connections have closed (at most ``HANG_S``)."""
    deadline = time.monotonic() + HANG_S
    fds = status(pid)[2]
    while fds > baseline and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        fds = status(pid)[2]
    return fds


async def fuzz(tmp_path: Path, count: int) -> None:
    chosen = seed()
    print(f"KMS_HOST_RELIABILITY_SEED={chosen}", file=sys.stderr)  # shown if the test fails
    config = tmp_path / "kms-host.toml"
    config.write_text(
        f"[server]\nidle_timeout_s = {IDLE_TIMEOUT_S}\nmax_pdu_bytes = {MAX_PDU_BYTES}\n"
        # Captured requests carry their capture's clock: judge them, not their age.
        '[policy]\ncheck_client_time = false\n[counting]\nprefill = "none"\n',
        encoding="utf-8",
    )
    daemon = Daemon(tmp_path / "data", "--config", str(config), keep=notable)
    mutator = Mutator(chosen)
    tally = Tally()
    try:
        port = await asyncio.to_thread(daemon.port)
        pid = daemon.process.pid
        await activate(port)
        rss0, _, fds0 = status(pid)
        stop = asyncio.Event()
        sampler = asyncio.create_task(monitor(daemon, tally, stop))
        started = time.monotonic()
        await asyncio.gather(
            *(
                fuzz_client(port, mutator, list(range(i, count, CLIENTS)), tally)
                for i in range(CLIENTS)
            )
        )
        seconds = time.monotonic() - started
        stop.set()
        await sampler
        assert not tally.died, "the daemon exited during the fuzz run"
        fds = await fds_settle(pid, fds0)
        await activate(port)
        rss1, hwm1, _ = status(pid)
    finally:
        code = daemon.stop(signal.SIGTERM)
    violations = daemon.counts["protocol_violation"]
    print(
        f"\nfuzz, seed {chosen}: {tally.cases} cases in {seconds:.1f} s over"
        f" {tally.connections} connections ({tally.answered} answered whole, {tally.closed}"
        f" closed by the host), {tally.replies} reply PDUs, {violations} protocol violations"
        f" logged; crashes {int(tally.died)}, hangs {len(tally.hangs)}, tracebacks"
        f" {len(daemon.tracebacks())}, wire errors {len(tally.wire)}; RSS {rss0 >> 20} MiB"
        f" before, peak {max(tally.peak_rss, rss1) >> 20} MiB (VmHWM {hwm1 >> 20} MiB),"
        f" {rss1 >> 20} MiB after; fds {fds0} before, peak {tally.peak_fds}, {fds} after"
    )
    assert code == 0
    assert tally.cases == count
    assert tally.hangs == []
    assert tally.wire == []
    assert daemon.tracebacks() == []
    assert [e for e in daemon.events if e.get("level") in ("error", "critical")] == []
    assert fds <= fds0
    assert hwm1 - rss0 <= RSS_GROWTH_BYTES


@pytest.mark.asyncio
async def test_mutated_streams_never_break_the_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with capsys.disabled():
        await fuzz(tmp_path, CI_CASES)


@pytest.mark.long
@pytest.mark.asyncio
async def test_mutated_streams_never_break_the_daemon_long(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with capsys.disabled():
        await fuzz(tmp_path, LONG_CASES)
