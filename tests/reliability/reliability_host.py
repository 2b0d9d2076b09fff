"""What the reliability tests share: the daemon as a subprocess, requests, and a client load.

The daemon runs as an operator runs it (``python -m kms_host serve`` on 127.0.0.1 port 0, a
real SQLite file); its JSON lines (the supervisor's and its workers', on one stdout) are read
by a thread. The load is many strict clients at once (:mod:`kms_host.client.strict`: every
answer verified as a Windows client verifies it, spec 5.7), each activating fresh CMIDs over
fresh connections, so that every acknowledged CMID is a distinct row the table must hold.

Product identities are facts from the spec (section 8.4), not read from our catalog.

The limits' tests (exhaustion, per-peer limits) watch the daemon from outside through
:class:`Host`: its ``/metrics``, and its descriptors and RSS in ``/proc``; their raw peers
send vlmcs's captured bind (tests/vectors).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from kms_host.client.strict import ClientError, KmsClient
from protocol.kms import KmsRequest, ProtocolVersion, datetime_to_filetime

WAIT_S = 30.0

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


class Daemon:
    """``kms-host serve`` as a subprocess, with its JSON log lines collected by a thread."""

    def __init__(
        self,
        data_dir: Path,
        *extra: str,
        max_fds: int | None = None,
        keep: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        """``max_fds``: the daemon's RLIMIT_NOFILE, soft and hard (default: this process's).

        ``keep`` picks the events held in :attr:`events` (default all); every event, kept or
        not, is tallied by name in :attr:`counts`, so that a run of many thousands of
        connections does not hold each of their log lines.
        """
        self.data_dir = data_dir
        self._keep = keep
        env = {k: v for k, v in os.environ.items() if not k.startswith("KMS_HOST_")}
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "kms_host", "serve", "--listen", "127.0.0.1:0"),
                *("--data-dir", str(data_dir), "--log-format", "json", *extra),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            preexec_fn=None if max_fds is None else lambda: _limit_fds(max_fds),  # noqa: PLW1509
        )
        self.events: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self._ended = False
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:  # until the supervisor and every worker closed it
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if not isinstance(event, dict) or not isinstance(event.get("event"), str):
                event = {"event": "not_json", "line": line}
            with self._changed:
                self.counts[event["event"]] += 1
                if self._keep is None or self._keep(event) or event["event"] == "not_json":
                    self.events.append(event)
                self._changed.notify_all()
        self.process.stdout.close()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._changed:
            return [event for event in self.events if event["event"] == name]

    def wait_for(self, name: str) -> dict[str, Any]:
        with self._changed:
            self._changed.wait_for(lambda: self._ended or self.named(name), timeout=WAIT_S)
        found = self.named(name)
        assert found, f"no {name} event: {self.events[-20:]}"
        return found[0]

    def port(self) -> int:
        return int(self.wait_for("listening")["addresses"][0].rsplit(":", 1)[1])

    def worker_pids(self) -> list[int]:
        return list(self.wait_for("workers_started")["pids"])

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout=WAIT_S)

    def tracebacks(self) -> list[dict[str, Any]]:
        """Events carrying a traceback, and plain lines that look like one."""
        with self._changed:
            return [e for e in self.events if "exception" in e or "Traceback" in e.get("line", "")]


def _limit_fds(count: int) -> None:
    """Runs in the forked child before exec: one C call, no lock taken."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie that nobody reaps counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


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
