"""List the project modules whose code runs while the daemon handles one V6 activation.

The daemon runs in-process, in a thread of its own with a profile hook (127.0.0.1 port 0,
SQLite on a temporary file); the client runs in the main thread, unprofiled, so only the
host's side is listed. A first activation warms the caches; the one measured comes on a fresh
connection (bind, then the call), as a Windows client's does.

    python scripts/activation_path.py
"""

from __future__ import annotations

import asyncio
import io
import sys
import tempfile
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from kms_host.client.strict import KmsClient
from kms_host.config import ConfigOverrides, load_config
from kms_host.host.app import BoundAddresses, serve
from kms_host.logs import configure_logging
from protocol.kms import KmsRequest, ProtocolVersion, datetime_to_filetime

ROOT = Path(__file__).resolve().parents[1]
PROJECT = (ROOT / "kms_host", ROOT / "protocol")


def request(cmid: uuid.UUID) -> KmsRequest:
    """Windows 10/11 Pro (spec 8.4-8.6) at this moment."""
    return KmsRequest(
        version=ProtocolVersion.V6,
        is_client_vm=0,
        license_status=2,
        grace_time_min=43200,
        application_id=uuid.UUID("55c92734-d682-4d71-983e-d6ec3f16059f"),
        sku_id=uuid.UUID("2de67392-b7a7-462a-b1ca-108dd189f588"),
        kms_counted_id=uuid.UUID("58e2134f-8e11-4d17-9cb2-91069c151148"),
        client_machine_id=cmid,
        required_client_count=25,
        request_time=datetime_to_filetime(datetime.now(UTC)),
        previous_client_machine_id=uuid.UUID(int=0),
        machine_name="trace.lab.example",
    )


class Tracer:
    """Collects the project files of every Python frame called while ``on`` is set."""

    def __init__(self) -> None:
        self.on = False
        self.files: set[str] = set()

    def hook(self, frame: FrameType, event: str, _arg: Any) -> None:
        if self.on and event == "call":
            name = frame.f_code.co_filename
            if name.startswith(tuple(str(p) for p in PROJECT)):
                self.files.add(str(Path(name).relative_to(ROOT)))


def main() -> int:
    configure_logging(fmt="json", level="info", stream=io.StringIO())  # logged, not shown
    tracer = Tracer()
    bound: list[BoundAddresses] = []
    ready = threading.Event()
    stop: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None

    def daemon(data: Path) -> None:
        nonlocal stop, loop
        threading.setprofile(tracer.hook)  # the store's executor threads, started later
        sys.setprofile(tracer.hook)

        async def run() -> None:
            nonlocal stop, loop
            stop, loop = asyncio.Event(), asyncio.get_running_loop()
            overrides = ConfigOverrides(listen=("127.0.0.1:0",), data_dir=data)
            config = load_config(None, env={}, overrides=overrides)

            def on_ready(addresses: BoundAddresses) -> None:
                bound.append(addresses)
                ready.set()

            await serve(config, shutdown_trigger=stop.wait, on_ready=on_ready)

        asyncio.run(run())

    async def activate(port: int, cmid: uuid.UUID) -> None:
        async with await KmsClient.connect("127.0.0.1", port) as client:
            await client.activate(request(cmid))

    with tempfile.TemporaryDirectory() as tmp:
        thread = threading.Thread(target=daemon, args=(Path(tmp),), daemon=True)
        thread.start()
        if not ready.wait(10):
            return 1
        port = bound[0].tcp[0][1]
        asyncio.run(activate(port, uuid.uuid4()))
        tracer.on = True
        asyncio.run(activate(port, uuid.uuid4()))
        tracer.on = False
        assert loop is not None
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(15)
    for name in sorted(tracer.files):
        print(name)
    print(f"{len(tracer.files)} project modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
