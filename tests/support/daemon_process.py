"""``kms-host serve`` as a subprocess, for the tests that watch a daemon from outside.

The daemon runs as an operator runs it (``python -m kms_host serve`` on 127.0.0.1 port 0, a
real SQLite file in ``data_dir``); its JSON lines (the supervisor's and its workers', on one
stdout) are read by a thread, so a test waits for an event by name. Shared by the
integration tests of ``--workers`` and the reliability suite (``pythonpath`` in
pyproject.toml puts this directory on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["WAIT_S", "Daemon", "gone"]

WAIT_S = 30.0
"""How long a test waits for an event, an exit or a process to go."""


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

    def wait_count(self, name: str, count: int) -> list[dict[str, Any]]:
        """The first ``count`` events called ``name``, once they have been logged."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._ended or len(self.named(name)) >= count, timeout=WAIT_S
            )
        found = self.named(name)
        assert len(found) >= count, f"{len(found)} {name} events of {count}: {self.events[-20:]}"
        return found[:count]

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
