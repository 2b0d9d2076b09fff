"""The daemon thread behind the fixture: its log capture, a failed start, a stopped host."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from kms_host.errors import ConfigError
from kms_host.logs import configure_logging
from kms_host.testing import HostNotRunning, running_host


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    structlog.reset_defaults()


def host_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("kms-host")]


@pytest.mark.usefixtures("restore_logging")
def test_events_are_captured_below_the_suites_level_and_its_config_comes_back(
    tmp_path: Path,
) -> None:
    configure_logging("json", "warning", io.StringIO())  # a suite that logs warnings only
    before = structlog.get_config()
    with running_host(tmp_path) as host:
        assert host.activate().hresult == 0
        [event] = host.events("activation")  # an info event
        assert event["result"] == "activated"
    assert structlog.get_config() == before


def test_a_start_that_fails_raises_its_error_and_leaves_no_thread(tmp_path: Path) -> None:
    toml = '[host]\nscope = ["no-such-product"]\n'
    with pytest.raises(ConfigError) as caught, running_host(tmp_path, toml):
        pass
    assert caught.value.key == "host.scope"  # refused by serve(), in the thread
    assert host_threads() == []


def test_a_stopped_host_can_no_longer_be_changed(tmp_path: Path) -> None:
    with running_host(tmp_path) as host:
        host.advance(days=1)
    with pytest.raises(HostNotRunning, match="not running"):
        host.advance(days=1)
    with pytest.raises(HostNotRunning):
        host.rules({"close": True})
    assert host_threads() == []
