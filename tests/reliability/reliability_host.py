"""What the reliability tests share: the daemon as a subprocess, requests, and a client load.

The daemon is :class:`daemon_process.Daemon` (tests/support), as the integration tests of
``--workers`` use it. The load is many strict clients at once (:mod:`kms_host.client.strict`:
every answer verified as a Windows client verifies it, spec 5.7), each activating fresh CMIDs
over fresh connections, so that every acknowledged CMID is a distinct row the table must hold.

Product identities are facts from the spec (section 8.4), not read from our catalog.

The limits' tests (exhaustion, per-peer limits) watch the daemon from outside through
:class:`Host`: its ``/metrics``, and its descriptors and RSS in ``/proc``; their raw peers
send vlmcs's captured bind (tests/vectors).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from daemon_process import WAIT_S, Daemon, gone
from prometheus_client.parser import text_string_to_metric_families

from kms_host.client.strict import ClientError, KmsClient
from protocol.kms import KmsRequest, ProtocolVersion, datetime_to_filetime

WINDOWS = uuid.UUID("55c92734-d682-4d71-983e-d6ec3f16059f")
WIN10_PRO_SKU = uuid.UUID("2de67392-b7a7-462a-b1ca-108dd189f588")
WIN10_KMS_ID = uuid.UUID("58e2134f-8e11-4d17-9cb2-91069c151148")

REQUIRED = 1000
"""RequiredClientCount sent: the largest the host takes (``policy.max_required_client_count``),
so the count's cap (twice the largest required count, spec 7.2) is 2000."""


def request(cmid: uuid.UUID, version: ProtocolVersion = ProtocolVersion.V6) -> KmsRequest:
    return KmsRequest(
        version=version,
        is_client_vm=0,
        license_status=2,
        grace_time_min=43200,
        application_id=WINDOWS,
        sku_id=WIN10_PRO_SKU,
        kms_counted_id=WIN10_KMS_ID,
        client_machine_id=cmid,
        required_client_count=REQUIRED,
        request_time=datetime_to_filetime(datetime.now(UTC)),
        previous_client_machine_id=uuid.UUID(int=0),
        machine_name=f"rel-{cmid.hex[:12]}.lab.example",
    )


async def wait_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not all(gone(pid) for pid in pids):
        assert time.monotonic() < deadline, f"still running: {pids}"
        await asyncio.sleep(0.02)


@dataclass
class Load:
    """Strict clients activating fresh CMIDs against one port until :meth:`stop`."""

    port: int
    clients: int
    versions: tuple[ProtocolVersion, ...] = (ProtocolVersion.V6,)
    per_client: int | None = None
    """Activations each client makes before it ends (None: until stopped)."""
    sent: set[uuid.UUID] = field(default_factory=set)
    acked: dict[uuid.UUID, int] = field(default_factory=dict)
    """CMID -> CurrentClientCount of every verified success answer."""
    by_version: dict[ProtocolVersion, int] = field(default_factory=dict)
    failures: list[tuple[float, str]] = field(default_factory=list)
    """(monotonic time, what failed): expected only once the host was killed."""
    first_ack: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._client(self.versions[i % len(self.versions)]))
            for i in range(self.clients)
        ]

    async def stop(self) -> None:
        self._stopping = True
        await asyncio.gather(*self._tasks)

    async def done(self) -> None:
        await asyncio.gather(*self._tasks)

    async def _client(self, version: ProtocolVersion) -> None:
        made = 0
        while not self._stopping and (self.per_client is None or made < self.per_client):
            made += 1
            cmid = uuid.uuid4()
            self.sent.add(cmid)
            try:
                async with await KmsClient.connect("127.0.0.1", self.port) as client:
                    result = await client.activate(request(cmid, version))
            except ClientError as exc:
                self.failures.append((time.monotonic(), f"{exc.stage}: {exc}"))
                await asyncio.sleep(0.01)  # the host is down: do not spin on refused connects
                continue
            if result.hresult != 0 or result.response is None:
                self.failures.append((time.monotonic(), f"HRESULT 0x{result.hresult:08X}"))
                continue
            assert result.response.client_machine_id == cmid
            self.acked[cmid] = result.response.current_client_count
            self.by_version[version] = self.by_version.get(version, 0) + 1
            self.first_ack.set()


# --- the limits' tests: a daemon watched from outside, and raw peers -----------------------

FD_TOLERANCE = 2
OPEN = "kms_host_open_connections"
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "vlmcsd-conversations.jsonl"


def captured_bind() -> bytes:
    """vlmcs's bind PDU (116 bytes, NDR32 + NDR64 + BTFN), as captured (tests/vectors)."""
    with VECTORS.open(encoding="utf-8") as lines:
        first = json.loads(next(lines))
    return bytes.fromhex(first["exchanges"][0]["hex"])


BIND = captured_bind()


def fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def settle_fds(pid: int, baseline: int) -> int:
    """Wait until the daemon holds no more than ``baseline`` (+ tolerance) descriptors."""
    deadline = time.monotonic() + WAIT_S
    while (count := fds(pid)) > baseline + FD_TOLERANCE:
        assert time.monotonic() < deadline, f"{count} fds, baseline {baseline}"
        await asyncio.sleep(0.05)
    return count


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


class Host:
    """A daemon started on a config, with its port, metrics address and pid."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        listening = daemon.wait_for("listening")
        self.port = int(listening["addresses"][0].rsplit(":", 1)[1])
        self.metrics = str(listening["metrics"][0])
        self.pid = daemon.process.pid

    def scrape(self) -> str:
        with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=WAIT_S) as answer:
            return str(answer.read().decode())

    async def wait_open(self, count: int) -> None:
        """Wait until the daemon serves exactly ``count`` connections."""
        deadline = time.monotonic() + WAIT_S
        while (now := metric(await asyncio.to_thread(self.scrape), OPEN)) != count:
            assert time.monotonic() < deadline, f"{now} connections open, not {count}"
            await asyncio.sleep(0.1)

    async def activate(self, source: str | None = None) -> None:
        async with await KmsClient.connect("127.0.0.1", self.port, local_host=source) as client:
            result = await client.activate(request(uuid.uuid4()))
        assert result.hresult == 0


@contextlib.asynccontextmanager
async def host(tmp_path: Path, toml: str, *, max_fds: int | None = None) -> AsyncIterator[Host]:
    config = tmp_path / "kms-host.toml"
    config.write_text(
        f'[metrics]\nlisten = "127.0.0.1:0"\n[counting]\nprefill = "none"\n[server]\n{toml}',
        encoding="utf-8",
    )
    daemon = Daemon(tmp_path / "data", "--config", str(config), max_fds=max_fds)
    try:
        yield await asyncio.to_thread(Host, daemon)
    finally:
        code = daemon.stop()
    assert code == 0
    assert daemon.tracebacks() == []
    assert [e for e in daemon.events if e.get("level") in ("error", "critical")] == []


def connect(source: str | None = None, port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if source is not None:
        sock.bind((source, 0))
    sock.settimeout(WAIT_S)
    sock.connect(("127.0.0.1", port))
    return sock


def closed_by_host(sock: socket.socket, within_s: float = 2.0) -> bool:
    """Whether the host closes ``sock`` within ``within_s`` without sending anything."""
    sock.settimeout(within_s)
    try:
        return sock.recv(64) == b""
    except ConnectionResetError:  # closed with our bytes unread: the kernel resets
        return True
    except TimeoutError:
        return False


def bound(sock: socket.socket) -> bool:
    """Send the captured bind; True on a bind_ack (PTYPE 0x0C), False if the host closed."""
    try:
        sock.sendall(BIND)
        answer = sock.recv(4096)
    except (ConnectionResetError, BrokenPipeError):
        return False
    return answer[2:3] == b"\x0c"


async def trickle_until_closed(port: int) -> tuple[float, int]:
    """Send the captured bind a byte a second (each resets the idle timer) until the host
    closes; return the seconds that took and the bytes sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    closed = asyncio.ensure_future(reader.read(1))
    try:
        for sent, byte in enumerate(BIND, 1):
            writer.write(bytes([byte]))
            done, _ = await asyncio.wait([closed], timeout=1.0)
            if done:  # EOF, or a reset when the close found our last byte unread
                assert closed.exception() is not None or closed.result() == b""
                return time.monotonic() - started, sent
        raise AssertionError("the whole bind went through")
    finally:
        closed.cancel()
        writer.close()
