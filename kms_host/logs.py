"""Logging setup: structlog events and stdlib records, rendered alike on one stream.

Following structlog's documented production setup (architecture 4.7): JSON lines when the
output is a file, a pipe or a container log (or ``format = "json"``), the readable console
renderer on a terminal (or ``format = "console"``). Our own events are rendered by structlog
and written straight to the stream (``WriteLoggerFactory``): the detour through the standard
``logging`` machinery would add two ``LogRecord``s, a caller lookup and a formatter to
every ``activation`` event. Records from ``asyncio`` and other libraries still
arrive through ``logging``; a ``ProcessorFormatter`` gives them the same processors and
renderer, so stdout stays uniformly JSON. Each line is one ``write`` call, so lines from the
two paths never interleave.

Event names and fields are snake_case and stable: they are an API for whoever parses them.

The console renderer writes string values as they are, and some come from clients (a
machine name): :func:`_escape_controls` runs first and escapes their control characters
(:mod:`kms_host.safe_text`), so that a log line on a terminal can neither forge another line
nor move the cursor. JSON lines escape them already.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import date
from typing import TextIO

import structlog
from structlog.typing import EventDict, Processor

from kms_host.safe_text import printable

__all__ = ["FORMATS", "LEVELS", "configure_logging"]

FORMATS = ("auto", "json", "console")
LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _Handler(logging.StreamHandler[TextIO]):
    """Our root handler, a class of its own so that a second configuration replaces it."""


# Frames without their local variables: locals bloat every line and may hold client data.
_DICT_TRACEBACKS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


def _json_default(value: object) -> str:
    """Render what ``json`` cannot: ISO 8601 for times, ``str()`` for UUIDs, paths, IPs."""
    return value.isoformat() if isinstance(value, date) else str(value)


_ENCODER = json.JSONEncoder(default=_json_default)
"""One encoder for every line: ``json.dumps`` given ``default=`` builds a new one per call."""


def _render_json(_logger: object, _name: str, event_dict: EventDict) -> str:
    """The JSON line, ``timestamp``, ``level`` and ``event`` first so that it reads like one."""
    head = {
        key: event_dict.pop(key) for key in ("timestamp", "level", "event") if key in event_dict
    }
    return _ENCODER.encode({**head, **event_dict})


class _Escaped(str):
    """A string value shown escaped: as itself when printed, as its original's ``repr``.

    The console renderer prints a string as it is, unless it holds a space, a quote, ``=``
    or a line break: then it prints its ``repr``, which escapes controls by itself. Either
    way the controls come out escaped once.
    """

    _original: str

    def __new__(cls, original: str) -> _Escaped:
        shown = super().__new__(cls, printable(original))
        shown._original = original
        return shown

    def __repr__(self) -> str:
        return repr(self._original)


def _escape_controls(_logger: object, _name: str, event_dict: EventDict) -> EventDict:
    """String values with their control characters escaped, for the console renderer.

    Other values need nothing: the renderer shows them with ``repr``, which escapes them.
    """
    return {
        key: value if not isinstance(value, str) or value.isprintable() else _Escaped(value)
        for key, value in event_dict.items()
    }


def configure_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging to ``stream`` (default stdout) at ``level``.

    Safe to call again (tests do): the previous handler is replaced. Loggers are not cached
    on first use, so a logger obtained before a second call follows the new configuration.
    """
    if fmt not in FORMATS or level not in LEVELS:
        raise ValueError(f"unknown log format {fmt!r} or level {level!r}")
    stream = sys.stdout if stream is None else stream
    as_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # ConsoleRenderer lays out exc_info itself and warns if it was formatted before it.
    final: list[Processor] = (
        [_DICT_TRACEBACKS, _render_json]
        if as_json
        else [_escape_controls, structlog.dev.ConsoleRenderer(colors=stream.isatty())]
    )
    handler = _Handler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    structlog.configure(
        processors=[*shared, *final],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
