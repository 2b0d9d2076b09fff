"""The data dir fails under a running host: it answers errors, logs once, and recovers.

Real faults on real file systems (mounting needs root, as CI has; elsewhere these skip):

* **Full.** The data dir is a small tmpfs (8 MiB); a filler file takes every free block
  while strict clients activate fresh CMIDs. Requests that cannot be recorded are answered HRESULT
  0x80070070 (ERROR_DISK_FULL, kms_host.errors); one ``storage_failed`` line names the file
  and the OS error; once the filler is removed the host activates again, without a restart,
  and logs one ``storage_recovered``.
* **Read-only.** Linux refuses ``mount -o remount,ro`` while a process holds a file there
  open for writing (the daemon holds its table, lock and WAL open): "mount point is busy".
  What does make a data dir read-only under a running process is the file system itself:
  ext4 with ``errors=remount-ro`` turns read-only on an error (here triggered through
  ``/sys/fs/ext4/<dev>/trigger_fs_error``), and stays so until it is unmounted. The host
  answers 0x80070013 (ERROR_WRITE_PROTECT) and logs once; recovery is a restart after the
  file system is repaired, and the table then holds every acknowledged row.

In both, after the fault, a fresh process reads the table: every CMID that was answered with
a success has its row, and no CMID that was answered with an error has one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_host import WAIT_S, Daemon, Load, request

from kms_host.client.strict import KmsClient
from kms_host.storage import open_store

CLIENTS = 8
PROBE_CMID = uuid.UUID("00000000-0000-4000-8000-000000001688")
FAILED_ANSWERS = 50
"""Error answers to collect while the fault holds: many requests, still one log line."""


def _mount(*argv: str) -> None:
    subprocess.run(["mount", *argv], check=True, capture_output=True, text=True, timeout=30)


def _umount(target: Path) -> None:
    subprocess.run(["umount", str(target)], check=False, capture_output=True, timeout=30)


def _mountable(tmp_path: Path) -> None:
    """Skip, saying why, where this process may not mount a file system."""
    if os.geteuid() != 0:
        pytest.skip("mounting a file system for the data dir needs root (CI runs as root)")
    probe = tmp_path / "probe"
    probe.mkdir()
    try:
        _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe))
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"mount -t tmpfs was refused here: {exc.stderr.strip()}")
    _umount(probe)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs: room for the table and its WAL at its largest (about 1000 pages, SQLite's
    automatic checkpoint), little more."""
    _mountable(tmp_path)
    target = tmp_path / "fs"
    target.mkdir()
    _mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", str(target))
    try:
        yield target
    finally:
        _umount(target)


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A 16 MiB ext4 on a loop device that turns read-only on an error: (mount point, image)."""
    _mountable(tmp_path)
    if shutil.which("mkfs.ext4") is None or shutil.which("e2fsck") is None:
        pytest.skip("mkfs.ext4 and e2fsck (e2fsprogs) are needed for the read-only case")
    image = tmp_path / "ext4.img"
    with image.open("wb") as out:
        out.truncate(16 * 2**20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, timeout=60)
    target = tmp_path / "ext4"
    target.mkdir()
    try:
        _mount("-o", "loop,errors=remount-ro", str(image), str(target))
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"mounting an ext4 image on a loop device was refused: {exc.stderr.strip()}")
    try:
        if not error_trigger(target).exists():
            pytest.skip("this kernel's ext4 has no trigger_fs_error to turn it read-only")
        yield target, image
    finally:
        _umount(target)


def error_trigger(target: Path) -> Path:
    """The sysfs file by which ext4 meets an error on the file system mounted at ``target``."""
    device = next(
        line.split()[0]
        for line in Path("/proc/mounts").read_text().splitlines()
        if line.split()[1] == str(target)
    )
    return Path("/sys/fs/ext4") / Path(device).resolve().name / "trigger_fs_error"


def make_read_only(target: Path) -> None:
    """Have ext4 meet an error, as a failing disk does: it turns read-only at once."""
    error_trigger(target).write_text("kms-host storage fault test\n")


def repair(target: Path, image: Path) -> None:
    """The operator's repair: unmount, check (e2fsck fixes what the error left), mount again."""
    _umount(target)
    subprocess.run(["e2fsck", "-fy", str(image)], check=False, capture_output=True, timeout=60)
    _mount("-o", "loop,errors=remount-ro", str(image), str(target))


def fill(directory: Path) -> Path:
    """A file taking every free block of ``directory``'s file system."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        for size in (65536, 512):  # then the last partial block
            with contextlib.suppress(OSError):  # ENOSPC: full
                while True:
                    out.write(bytes(size))
    return filler


async def until_failures(load: Load, count: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while len(load.failures) < count:
        assert time.monotonic() < deadline, f"only {len(load.failures)} failures"
        await asyncio.sleep(0.01)


async def until_events(daemon: Daemon, name: str, count: int) -> None:
    """Until the daemon has logged ``count`` events ``name`` (its lines arrive by a pipe)."""
    deadline = time.monotonic() + WAIT_S
    while len(daemon.named(name)) < count:
        assert time.monotonic() < deadline, f"only {len(daemon.named(name))} {name}"
        await asyncio.sleep(0.01)
    assert len(daemon.named(name)) == count


async def probe(port: int) -> int:
    """What the host answers the reserved probe CMID (README: health probe): its HRESULT."""
    async with await KmsClient.connect("127.0.0.1", port) as client:
        return (await client.activate(request(PROBE_CMID))).hresult


async def activations(port: int, count: int) -> Load:
    """``count`` activations by fresh CMIDs, one client after another."""
    load = Load(port, 1, per_client=count)
    load.start()
    await load.done()
    return load


async def rows(data: Path) -> set[uuid.UUID]:
    store = await open_store(data)
    try:
        return {record.cmid for record in await store.clients(app="windows")}
    finally:
        await store.close()


def config(tmp_path: Path) -> str:
    path = tmp_path / "kms-host.toml"
    path.write_text('[counting]\nprefill = "none"\n', encoding="utf-8")
    return str(path)


def assert_answers_match_rows(loads: list[Load], table: set[uuid.UUID]) -> tuple[int, int]:
    """Every success has its row, no error answer has one; returns (successes, errors)."""
    acked = {cmid for load in loads for cmid in load.acked}
    refused = {cmid for load in loads for cmid in load.sent} - acked
    assert acked - table == set(), "acknowledged activations missing from the table"
    assert refused & table == set(), "CMIDs answered with an error were recorded"
    return len(acked), len(refused)


async def full_episodes(small_fs: Path, tmp_path: Path, episodes: int) -> None:
    """Fill and free the data dir ``episodes`` times under one daemon."""
    data = small_fs / "data"
    daemon = Daemon(data, "--config", config(tmp_path))
    loads: list[Load] = []
    try:
        port = await asyncio.to_thread(daemon.port)
        loads.append(await activations(port, 5))
        for episode in range(1, episodes + 1):
            filler = await asyncio.to_thread(fill, small_fs)
            during = Load(port, CLIENTS)
            loads.append(during)
            during.start()
            try:
                await until_failures(during, FAILED_ANSWERS // 2)
                assert await probe(port) == 0  # it reads: no answer about the fault
                await until_failures(during, FAILED_ANSWERS)
            finally:
                await during.stop()
            assert {failure for _, failure in during.failures} == {"HRESULT 0x80070070"}
            assert len(daemon.named("storage_failed")) == episode
            assert len(daemon.named("storage_recovered")) == episode - 1
            filler.unlink()
            loads.append(after := await activations(port, 5))
            assert after.failures == [], [os.stat(p).st_size for p in data.iterdir()]
            await until_events(daemon, "storage_recovered", episode)
    finally:
        assert daemon.stop(signal.SIGTERM) == 0
    assert [load.failures for load in loads[::2]] == [[]] * (episodes + 1)
    for failed in daemon.named("storage_failed"):
        assert str(data / "kms-host.sqlite3") in failed["detail"]
        assert "no space left on device" in failed["detail"]
        assert failed["hresult"] == "0x80070070"
    errors = [e["event"] for e in daemon.events if e.get("level") == "error"]
    assert errors == ["storage_failed"] * episodes
    answered = [e for e in daemon.named("activation") if e["result"] == "storage_failed"]
    assert {e["level"] for e in answered} == {"warning"}
    recovered = sum(e["failed_requests"] for e in daemon.named("storage_recovered"))
    assert recovered == len(answered) >= FAILED_ANSWERS * episodes
    assert daemon.tracebacks() == []
    successes, refused = assert_answers_match_rows(loads, await rows(data))
    print(
        f"\nfull data dir, {episodes} episodes: {successes} activated,"
        f" {refused} answered 0x80070070"
    )


@pytest.mark.asyncio
async def test_a_full_data_dir_fails_requests_and_recovers(small_fs: Path, tmp_path: Path) -> None:
    await full_episodes(small_fs, tmp_path, 1)


@pytest.mark.long
@pytest.mark.asyncio
async def test_a_full_data_dir_fails_requests_and_recovers_long(
    small_fs: Path, tmp_path: Path
) -> None:
    await full_episodes(small_fs, tmp_path, 20)


@pytest.mark.asyncio
async def test_a_data_dir_turned_read_only_fails_requests_until_repaired(
    ext4: tuple[Path, Path], tmp_path: Path
) -> None:
    target, image = ext4
    data = target / "data"
    daemon = Daemon(data, "--config", config(tmp_path))
    try:
        port = await asyncio.to_thread(daemon.port)
        before = await activations(port, 5)
        assert before.failures == []
        make_read_only(target)
        during = Load(port, CLIENTS)
        during.start()
        try:
            await until_failures(during, FAILED_ANSWERS)
        finally:
            await during.stop()
        assert {failure for _, failure in during.failures} == {"HRESULT 0x80070013"}
        assert len(daemon.named("storage_failed")) == 1
    finally:
        stopped = daemon.stop(signal.SIGTERM)  # the stop cannot remove runtime.json
    assert stopped == 0
    noted = [e["event"] for e in daemon.events if e["level"] in ("warning", "error")]
    assert [e for e in noted if e != "activation"] == ["storage_failed", "runtime_file_left"]
    (failed,) = daemon.named("storage_failed")
    assert str(data / "kms-host.sqlite3") in failed["detail"]
    assert "read-only file system" in failed["detail"]
    assert failed["hresult"] == "0x80070013"
    assert daemon.tracebacks() == []
    await asyncio.to_thread(repair, target, image)
    again = Daemon(data, "--config", config(tmp_path))
    try:
        after = await activations(await asyncio.to_thread(again.port), 5)
    finally:
        assert again.stop(signal.SIGTERM) == 0
    assert after.failures == []
    successes, errors = assert_answers_match_rows([before, during, after], await rows(data))
    print(f"read-only data dir: {successes} activated, {errors} answered 0x80070013")
