"""DNS discovery on loopback, checked by independent implementations: ``dig`` and BIND 9.

(a) Our responder on 127.0.0.1 port 0, queried with ``dig`` (Debian's bind9-dnsutils).
(b) A real ``named`` started here with dynamic zones (one TSIG-only): we publish and
    withdraw by RFC 2136, and ``dig`` against BIND sees the result.
(c) ``discover()`` against BIND, and failover between two published hosts.

``dig`` and ``named`` come from ``.ci/setup-dns.sh``. Without them these tests skip locally
and fail in CI (CI=true), which must run them. Every socket is on 127.0.0.0/8, every
subprocess and wait is bounded in time, and ``named`` is killed at the end.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import pytest
import structlog

from kms_host.discovery.publisher import DnsPublishError, publish, run_publisher, withdraw
from kms_host.discovery.responder import MAX_TCP_QUERY_BYTES, serve_dns
from kms_host.discovery.settings import DnsPublishConfig, SrvTarget
from kms_host.discovery.srv_lookup import NoSrvRecordError, discover, first_answering
from kms_host.discovery.zone import SrvZone

DIG_TIMEOUT_S = 15.0
TEST_TIMEOUT_S = 60.0
NAMED_START_S = 20.0
TSIG_KEY = "kms-host-key"
ZONES = ("lab.example", "signed.example", "failover.example")


def require(tool: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if path is None:
        reason = f"{tool} is not installed (.ci/setup-dns.sh installs bind9 and bind9-dnsutils)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def dig() -> str:
    return require("dig")


# --- dig ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigResult:
    returncode: int
    text: str

    def _find(self, pattern: str) -> str:
        found = re.search(pattern, self.text)
        assert found, f"{pattern!r} not in dig output:\n{self.text}"
        return found.group(1)

    @property
    def status(self) -> str:
        return self._find(r"status: ([A-Z]+)")

    @property
    def flags(self) -> set[str]:
        return set(self._find(r";; flags: ([a-z ]*);").split())

    @property
    def size(self) -> int:
        return int(self._find(r"MSG SIZE\s+rcvd: (\d+)"))

    @property
    def query_size(self) -> int:
        """The size of the query dig sent (printed with ``+qr``)."""
        return int(self._find(r"QUERY SIZE: (\d+)"))

    def section(self, name: str) -> list[str]:
        """Records of one section, whitespace-normalised (dig separates fields with tabs)."""
        lines = self.text.split(f";; {name} SECTION:\n", 1)
        if len(lines) == 1:
            return []
        return [" ".join(line.split()) for line in lines[1].split("\n\n", 1)[0].splitlines()]


async def run_dig(dig: str, port: int, *args: str) -> DigResult:
    proc = await asyncio.create_subprocess_exec(
        dig, "@127.0.0.1", "-p", str(port), "+tries=1", "+timeout=2", *args,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with asyncio.timeout(DIG_TIMEOUT_S):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return DigResult(proc.returncode or 0, out.decode())


async def eventually(condition: Callable[[], bool], *, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    pytest.fail("condition not met in time")


# --- (a) our responder --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def responder(
    zone: SrvZone, *, qps: float = 1000.0, burst: int = 1000, idle_s: float = 2.0
) -> AsyncIterator[int]:
    """Serve ``zone`` on 127.0.0.1 port 0 (UDP and TCP); yields the port."""
    stop = asyncio.Event()
    bound: asyncio.Future[list[tuple[str, int]]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_dns(zone, [("127.0.0.1", 0)], rate_limit_qps=qps, rate_limit_burst=burst,
                  tcp_idle_timeout_s=idle_s, stop=stop, on_bound=bound.set_result)
    )  # fmt: skip
    waiters: list[asyncio.Future[Any]] = [task, bound]
    async with asyncio.timeout(5):
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raises what went wrong
    try:
        yield bound.result()[0][1]
    finally:
        stop.set()
        async with asyncio.timeout(5):
            await task


LAB = SrvZone(
    "lab.example",
    (SrvTarget("kms.lab.example", 1688, 0, 0, ("127.0.0.1", "::1")),),
    ttl_s=600,
    nameserver_addresses=("127.0.0.1",),
)


@pytest.mark.asyncio
async def test_dig_gets_authoritative_srv_a_and_aaaa(dig: str) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S), responder(LAB) as port:
        srv = await run_dig(dig, port, "_vlmcs._tcp.lab.example", "SRV")
        assert srv.status == "NOERROR"
        assert "aa" in srv.flags
        assert "ra" not in srv.flags
        assert srv.section("ANSWER") == [
            "_vlmcs._tcp.lab.example. 600 IN SRV 0 0 1688 kms.lab.example."
        ]
        assert srv.section("ADDITIONAL") == [
            "kms.lab.example. 600 IN A 127.0.0.1",
            "kms.lab.example. 600 IN AAAA ::1",
        ]
        a = await run_dig(dig, port, "kms.lab.example", "A", "+tcp")
        assert a.section("ANSWER") == ["kms.lab.example. 600 IN A 127.0.0.1"]
        assert "aa" in a.flags
        aaaa = await run_dig(dig, port, "kms.lab.example", "AAAA")
        assert aaaa.section("ANSWER") == ["kms.lab.example. 600 IN AAAA ::1"]


@pytest.mark.asyncio
async def test_dig_gets_refused_nxdomain_and_formerr(dig: str) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S), responder(LAB) as port:
        refused = await run_dig(dig, port, "www.example.com", "A")
        assert refused.status == "REFUSED"
        assert "aa" not in refused.flags
        nxdomain = await run_dig(dig, port, "nope.lab.example", "A")
        assert nxdomain.status == "NXDOMAIN"
        assert "aa" in nxdomain.flags
        assert nxdomain.section("AUTHORITY")[0].startswith(
            "lab.example. 600 IN SOA ns.lab.example."
        )
        formerr = await run_dig(dig, port, "+header-only")  # a query with no question
        assert formerr.status == "FORMERR"


@pytest.mark.asyncio
async def test_a_burst_from_one_source_is_limited(dig: str) -> None:
    burst = 5
    query = dns.message.make_query("_vlmcs._tcp.lab.example", "SRV").to_wire()
    async with asyncio.timeout(TEST_TIMEOUT_S), responder(LAB, qps=0.5, burst=burst) as port:
        with (
            structlog.testing.capture_logs() as logs,
            socket.socket(type=socket.SOCK_DGRAM) as sock,
        ):
            sock.setblocking(False)
            sock.connect(("127.0.0.1", port))
            for _ in range(30):
                sock.send(query)
            answers = 0
            deadline = time.monotonic() + 1.0
            loop = asyncio.get_running_loop()
            while (left := deadline - time.monotonic()) > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await loop.sock_recv(sock, 4096)
                        answers += 1
            limited = await run_dig(dig, port, "_vlmcs._tcp.lab.example", "SRV", "+timeout=1")
        assert burst <= answers <= burst + 1  # + at most one token refilled meanwhile
        assert limited.returncode != 0, limited.text  # dig from the same address: no answer
        warnings = [entry for entry in logs if entry["event"] == "dns_rate_limited"]
        assert len(warnings) == 1, "logged once per window"
        assert warnings[0]["peer"] == "127.0.0.1"
        assert warnings[0]["log_level"] == "warning"


@pytest.mark.asyncio
async def test_a_large_answer_never_exceeds_what_the_query_allows(dig: str) -> None:
    zone = SrvZone(
        "lab.example",
        tuple(SrvTarget(f"kms-host-number-{i:02d}.lab.example", 1688, 0, i) for i in range(40)),
    )
    async with asyncio.timeout(TEST_TIMEOUT_S), responder(zone) as port:
        plain = await run_dig(dig, port, "_vlmcs._tcp.lab.example", "SRV", "+noedns", "+ignore")
        assert "tc" in plain.flags
        assert plain.size <= 512
        edns = await run_dig(
            dig, port, "_vlmcs._tcp.lab.example", "SRV", "+bufsize=1232", "+ignore"
        )
        assert "tc" in edns.flags
        assert edns.size <= 1232
        retried = await run_dig(dig, port, "_vlmcs._tcp.lab.example", "SRV")  # falls back to TCP
        assert "tc" not in retried.flags
        assert len(retried.section("ANSWER")) == 40


@pytest.mark.asyncio
async def test_tcp_closes_oversized_and_idle_connections() -> None:
    query = dns.message.make_query("lab.example", "SOA").to_wire(prepend_length=True)
    async with asyncio.timeout(TEST_TIMEOUT_S), responder(LAB, idle_s=0.5) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(query + query)  # two pipelined queries on one connection (RFC 7766)
        for _ in range(2):
            size = int.from_bytes(await reader.readexactly(2), "big")
            assert dns.message.from_wire(await reader.readexactly(size)).answer
        writer.write((MAX_TCP_QUERY_BYTES + 1).to_bytes(2, "big"))
        assert await reader.read() == b"", "closed on an oversized length"
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        assert await reader.read() == b"", "closed when idle"
        assert 0.4 < time.monotonic() - started < 5
        writer.close()


@pytest.mark.asyncio
async def test_discover_against_our_responder_uses_the_additional_addresses() -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S), responder(LAB) as port:
        hosts = await discover("lab.example", dns_server=("127.0.0.1", port))
    assert hosts == [("127.0.0.1", 1688), ("::1", 1688)]


# --- (b) and (c): a real BIND 9 -----------------------------------------------------------


@dataclass(frozen=True)
class Named:
    port: int
    secret: str

    def publish_config(self, zone: str, **overrides: object) -> DnsPublishConfig:
        settings: dict[str, object] = {
            "server": ("127.0.0.1", self.port),
            "zone": zone,
            "ttl_s": 300,
        }
        settings.update(overrides)
        return DnsPublishConfig(**settings)  # type: ignore[arg-type]


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (named listens on both)."""
    for _ in range(20):
        with socket.socket() as tcp, socket.socket(type=socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port")


NAMED_CONF = """\
options {{
    directory "{dir}";
    pid-file none;
    session-keyfile none;
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
    allow-query {{ 127.0.0.1; }};
}};
controls {{ }};
key "{key}" {{ algorithm hmac-sha256; secret "{secret}"; }};
{zones}
"""
ZONE_CONF = 'zone "{zone}" {{ type primary; file "{zone}.db"; allow-update {{ {who}; }}; }};'


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Named]:
    """BIND 9 in the foreground (-g) on a free loopback port, with its own directory."""
    binary = require("named")
    workdir = tmp_path_factory.mktemp("named")
    port = free_port()
    secret = base64.b64encode(os.urandom(32)).decode()
    conf = workdir / "named.conf"
    zones = "\n".join(
        ZONE_CONF.format(
            zone=zone, who=f'key "{TSIG_KEY}"' if zone == "signed.example" else "127.0.0.1"
        )
        for zone in ZONES
    )
    conf.write_text(
        NAMED_CONF.format(dir=workdir, port=port, key=TSIG_KEY, secret=secret, zones=zones)
    )
    for zone in ZONES:
        (workdir / f"{zone}.db").write_text(
            f"$TTL 300\n@ IN SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 300\n"
            f"@ IN NS ns.{zone}.\nns IN A 127.0.0.1\n"
        )
    log_path = workdir / "named.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [binary, "-g", "-n", "1", "-c", str(conf)], stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        wait_for_named(proc, port, log_path)
        yield Named(port, secret)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def wait_for_named(proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    """Ready = every zone answers its SOA: a real round trip, not just a bound socket."""
    deadline = time.monotonic() + NAMED_START_S
    pending = list(ZONES)
    while pending and time.monotonic() < deadline and proc.poll() is None:
        query = dns.message.make_query(pending[0], "SOA")
        with contextlib.suppress(dns.exception.Timeout, OSError):
            if dns.query.udp(query, "127.0.0.1", port=port, timeout=0.3).rcode() == 0:
                pending.pop(0)
                continue
        time.sleep(0.1)
    if pending:
        pytest.fail(f"named did not serve {pending}:\n{log_path.read_text()[-3000:]}")


@pytest.mark.asyncio
async def test_publish_then_withdraw_in_bind(named: Named, dig: str) -> None:
    config = named.publish_config("lab.example")
    targets = [SrvTarget("kms.lab.example", 1688, 0, 0, ("127.0.0.1",))]
    async with asyncio.timeout(TEST_TIMEOUT_S):
        await publish(config, targets)
        seen = await run_dig(dig, named.port, "_vlmcs._tcp.lab.example", "SRV")
        assert seen.section("ANSWER") == [
            "_vlmcs._tcp.lab.example. 300 IN SRV 0 0 1688 kms.lab.example."
        ]
        assert "kms.lab.example. 300 IN A 127.0.0.1" in seen.section("ADDITIONAL")
        await withdraw(config, targets)
        gone = await run_dig(dig, named.port, "_vlmcs._tcp.lab.example", "SRV")
        assert gone.status == "NXDOMAIN"
        assert (await run_dig(dig, named.port, "kms.lab.example", "A")).status == "NXDOMAIN"


@pytest.mark.asyncio
async def test_publisher_logs_like_event_12294_and_withdraws_on_stop(
    named: Named, dig: str
) -> None:
    config = named.publish_config("lab.example", interval_s=0.2)
    targets = [SrvTarget("kms2.lab.example", 1688, 0, 0, ("127.0.0.2",))]
    stop = asyncio.Event()
    async with asyncio.timeout(TEST_TIMEOUT_S):
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(run_publisher(config, targets, stop=stop))
            # published at start, then again after interval_s
            await eventually(lambda: sum(e["event"] == "dns_published" for e in logs) >= 2)
            seen = await run_dig(dig, named.port, "_vlmcs._tcp.lab.example", "SRV")
            stop.set()
            await task
        assert seen.section("ANSWER") == [
            "_vlmcs._tcp.lab.example. 300 IN SRV 0 0 1688 kms2.lab.example."
        ]
        published = next(entry for entry in logs if entry["event"] == "dns_published")
        assert published == {
            "event": "dns_published",
            "log_level": "info",
            "event_id": 12294,
            "dns_domain": "lab.example",
            "record": "_vlmcs._tcp.lab.example. 300 IN SRV 0 0 1688 kms2.lab.example.",
            "server": f"127.0.0.1:{named.port}",
        }
        assert logs[-1]["event"] == "dns_withdrawn"
        gone = await run_dig(dig, named.port, "_vlmcs._tcp.lab.example", "SRV")
        assert gone.status == "NXDOMAIN"


@pytest.mark.asyncio
async def test_tsig_signed_update(named: Named, dig: str) -> None:
    signed = named.publish_config(
        "signed.example", tsig_key_name=TSIG_KEY, tsig_secret=named.secret
    )
    targets = [SrvTarget("kms.signed.example")]
    async with asyncio.timeout(TEST_TIMEOUT_S):
        await publish(signed, targets)
        seen = await run_dig(dig, named.port, "_vlmcs._tcp.signed.example", "SRV")
        assert seen.section("ANSWER") == [
            "_vlmcs._tcp.signed.example. 300 IN SRV 0 0 1688 kms.signed.example."
        ]
        with pytest.raises(DnsPublishError) as unsigned:
            await publish(named.publish_config("signed.example"), targets)
        assert (unsigned.value.rcode, unsigned.value.hresult) == ("REFUSED", 0x8007232D)
        await withdraw(signed, targets)
        assert (
            await run_dig(dig, named.port, "_vlmcs._tcp.signed.example", "SRV")
        ).status == "NXDOMAIN"


@pytest.mark.asyncio
async def test_failed_publication_logs_like_event_12293(named: Named) -> None:
    wrong = base64.b64encode(b"not the key" * 3).decode()
    config = named.publish_config(
        "signed.example", tsig_key_name=TSIG_KEY, tsig_secret=wrong, retry_s=60
    )
    stop = asyncio.Event()
    async with asyncio.timeout(TEST_TIMEOUT_S):
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(
                run_publisher(config, [SrvTarget("x.signed.example")], stop=stop)
            )
            await eventually(lambda: bool(logs))
            stop.set()
            await task
    [failed] = logs
    assert failed["event"] == "dns_publish_failed"
    assert failed["event_id"] == 12293
    assert failed["dns_domain"] == "signed.example"
    assert failed["rcode"] == "BADSIG"
    assert failed["hresult"] == "0x80072338"  # HRESULT_FROM_WIN32(DNS_ERROR_RCODE_BADSIG)
    assert failed["reason"]


@pytest.mark.asyncio
async def test_discover_orders_bind_answers_and_fails_over(named: Named) -> None:
    async def answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    host = await asyncio.start_server(answering, "127.0.0.3", 0)
    open_port = host.sockets[0].getsockname()[1]
    closed_port = free_port()
    config = named.publish_config("failover.example")
    targets = [
        SrvTarget("backup.failover.example", open_port, 10, 0, ("127.0.0.3",)),
        SrvTarget("primary.failover.example", closed_port, 0, 0, ("127.0.0.1",)),
    ]

    async def try_host(address: str, port: int) -> int:
        async with asyncio.timeout(2):
            _, writer = await asyncio.open_connection(address, port)
        writer.close()
        return port

    async with asyncio.timeout(TEST_TIMEOUT_S), host:
        await publish(config, targets)
        try:
            hosts = await discover(
                "failover.example", dns_server=("127.0.0.1", named.port), rng=random.Random(1)
            )
            assert hosts == [("127.0.0.1", closed_port), ("127.0.0.3", open_port)]
            with structlog.testing.capture_logs() as logs:
                assert await first_answering(hosts, try_host) == open_port
            assert [entry["event"] for entry in logs] == ["discovery_host_failed"]
        finally:
            await withdraw(config, targets)


@pytest.mark.asyncio
async def test_no_srv_record_in_bind_is_8007232b(named: Named) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        with pytest.raises(NoSrvRecordError) as caught:
            await discover("nothing.lab.example", dns_server=("127.0.0.1", named.port))
    assert caught.value.hresult == 0x8007232B


# --- amplification and the per-source rate, measured over real UDP ------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ["lab.example", "_vlmcs._tcp.lab.example"])
@pytest.mark.parametrize("edns", ["+noedns", "+edns=0"])
async def test_dig_any_gets_one_hinfo_within_three_times_its_query(
    dig: str, name: str, edns: str
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S), responder(LAB) as port:
        result = await run_dig(dig, port, name, "ANY", edns, "+nocookie", "+qr")
    sent = result.query_size
    assert result.section("ANSWER") == [f'{name}. 600 IN HINFO "RFC8482" ""']  # RFC 8482 4.2
    assert result.size <= 3 * sent, f"{result.size} bytes for a {sent}-byte query"


@pytest.mark.asyncio
async def test_the_srv_query_of_the_published_record_stays_within_three_times(dig: str) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S), responder(LAB) as port:
        for edns in ("+noedns", "+edns=0"):
            result = await run_dig(
                dig, port, "_vlmcs._tcp.lab.example", "SRV", edns, "+nocookie", "+qr"
            )
            sent = result.query_size
            assert result.section("ANSWER"), result.text
            assert result.size <= 3 * sent, f"{result.size} bytes for a {sent}-byte query"


@pytest.mark.asyncio
async def test_a_steady_flood_is_answered_at_the_configured_rate() -> None:
    """A source sending 200 queries a second for 2 s gets its burst plus the rate's share."""
    qps, burst, duration_s = 10.0, 5, 2.0
    query = dns.message.make_query("_vlmcs._tcp.lab.example", "SRV").to_wire()
    async with asyncio.timeout(TEST_TIMEOUT_S), responder(LAB, qps=qps, burst=burst) as port:
        with socket.socket(type=socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect(("127.0.0.1", port))
            loop = asyncio.get_running_loop()
            answered = sent = 0

            async def receive() -> None:
                nonlocal answered
                while True:
                    await loop.sock_recv(sock, 4096)
                    answered += 1

            receiver = asyncio.create_task(receive())
            start = time.monotonic()
            while time.monotonic() - start < duration_s:
                sock.send(query)
                sent += 1
                await asyncio.sleep(0.005)
            elapsed = time.monotonic() - start
            await asyncio.sleep(0.2)  # the last answers in flight
            receiver.cancel()
    assert sent >= 100, "the flood was not a flood"
    assert burst <= answered <= burst + qps * elapsed + 1, (sent, answered, elapsed)
    assert answered < sent / 4
