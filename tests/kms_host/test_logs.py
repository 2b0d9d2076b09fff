"""Log output: one JSON object per line off a terminal, console text on one, one chain for all."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from kms_host.logs import configure_logging

ANSI = re.compile(r"\x1b\[[0-9;]*m")
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_shape() -> None:
    stream = io.StringIO()
    configure_logging("auto", "info", stream)
    cmid = uuid.UUID("5d9f8c6e-3b1a-4e8f-9c2d-7a6b5c4d3e2f")
    seen = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    structlog.get_logger().info("activation", cmid=cmid, seen_at=seen, count=25, app="windows")
    [line] = lines(stream)
    assert line["event"] == "activation"
    assert line["level"] == "info"
    assert ISO_UTC.fullmatch(line["timestamp"])
    assert line["cmid"] == str(cmid)
    assert line["seen_at"] == "2024-05-01T12:00:00+00:00"
    assert (line["count"], line["app"]) == (25, "windows")


def test_default_stream_is_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging()
    structlog.get_logger().warning("listening", addresses=["[::]:1688"])
    [line] = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert line["event"] == "listening"
    assert line["level"] == "warning"
    assert line["addresses"] == ["[::]:1688"]


def test_level_filters_structlog_and_stdlib() -> None:
    stream = io.StringIO()
    configure_logging("json", "warning", stream)
    log = structlog.get_logger()
    log.info("hidden")
    logging.getLogger("asyncio").info("hidden too")
    log.warning("shown")
    assert [line["event"] for line in lines(stream)] == ["shown"]


def test_stdlib_records_use_the_same_chain() -> None:
    stream = io.StringIO()
    configure_logging("json", "debug", stream)
    structlog.contextvars.bind_contextvars(conn_id=7, peer="192.0.2.1:50000")
    logging.getLogger("asyncio").warning("socket.send() raised %s", "OSError")
    [line] = lines(stream)
    assert line["event"] == "socket.send() raised OSError"
    assert line["level"] == "warning"
    assert line["logger"] == "asyncio"
    assert (line["conn_id"], line["peer"]) == (7, "192.0.2.1:50000")
    assert ISO_UTC.fullmatch(line["timestamp"])


def test_context_variables_are_merged() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream)
    structlog.contextvars.bind_contextvars(conn_id=3)
    structlog.get_logger().info("bind_accepted")
    assert lines(stream)[0]["conn_id"] == 3


def test_exceptions_become_structured_without_locals() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream)
    secret = "client data"  # a local that must not reach the log
    try:
        raise ValueError(secret[:6])
    except ValueError:
        structlog.get_logger().exception("connection_failed")
    [line] = lines(stream)
    assert line["level"] == "error"
    [error] = line["exception"]
    assert (error["exc_type"], error["exc_value"]) == ("ValueError", "client")
    assert "locals" not in error["frames"][-1]
    assert "client data" not in stream.getvalue()


def test_console_on_a_tty() -> None:
    stream = FakeTty()
    configure_logging("auto", "info", stream)
    structlog.get_logger().info("listening", port=1688)
    text = stream.getvalue()
    assert ANSI.search(text)  # colours on a terminal
    plain = ANSI.sub("", text)
    assert "listening" in plain
    assert "port=1688" in plain
    with pytest.raises(json.JSONDecodeError):
        json.loads(plain)


def test_console_forced_off_a_tty_has_no_colours() -> None:
    stream = io.StringIO()
    configure_logging("console", "info", stream)
    logging.getLogger("asyncio").error("loop closed")
    text = stream.getvalue()
    assert not ANSI.search(text)
    assert "loop closed" in text
    assert "[asyncio]" in text


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("pc\x1b[2J\x07", "machine_name=pc\\x1b[2J\\x07\n"),  # printed bare
        ("pc\x1b[31m forged", "machine_name='pc\\x1b[31m forged'\n"),  # quoted: it has a space
        ("a\nb\r\x00\x7f\x9b\u202e", "machine_name=a\\nb\\r\\x00\\x7f\\x9b\\u202e\n"),
    ],
)
def test_console_escapes_control_characters_once(name: str, shown: str) -> None:
    stream = FakeTty()  # colours on: the renderer's own escapes must stay the only ones
    configure_logging("console", "info", stream)
    structlog.get_logger().info("activation", machine_name=name, hresult="0x0")
    logging.getLogger("asyncio").warning("peer %s", name)
    plain = ANSI.sub("", stream.getvalue())
    assert shown in plain
    assert len(plain.splitlines()) == 2
    assert not {c for c in plain.replace("\n", "") if not c.isprintable()}


def test_json_forced_on_a_tty() -> None:
    stream = FakeTty()
    configure_logging("json", "info", stream)
    structlog.get_logger().info("listening")
    assert lines(stream)[0]["event"] == "listening"


def test_second_call_replaces_the_first() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("json", "info", first)
    log = structlog.get_logger()  # obtained before the second call
    log.info("one")
    configure_logging("json", "debug", second)
    log.debug("two")
    logging.getLogger("asyncio").debug("three")
    assert [line["event"] for line in lines(first)] == ["one"]
    assert [line["event"] for line in lines(second)] == ["two", "three"]


@pytest.mark.parametrize(("fmt", "level"), [("text", "info"), ("json", "verbose")])
def test_unknown_format_or_level(fmt: str, level: str) -> None:
    with pytest.raises(ValueError, match="unknown log format"):
        configure_logging(fmt, level, io.StringIO())
