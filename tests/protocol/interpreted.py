"""Run the codecs on ``construct``'s interpreter instead of the derived layouts.

The codecs (``protocol.rpc.codec``, ``protocol.rpc.ndr``, ``protocol.kms.codec``) read and
write every layout through a :class:`protocol.layout.Layout` derived from its schema
declaration. :func:`interpreted` swaps each of them, for the length of a ``with`` block,
for :class:`Interpreted`, which hands the same calls to ``construct``'s own ``parse`` and
``build`` of that declaration. Every memo the codecs keep is cleared on the way in and on
the way out, so a result cannot be one the other path cached a moment before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from construct import ConstructError, Container, ListContainer

from protocol.kms import codec as kms_codec
from protocol.layout import Layout
from protocol.rpc import codec as rpc_codec
from protocol.rpc import ndr

MODULES = (rpc_codec, ndr, kms_codec)
_FAILURES = (ConstructError, TypeError, ValueError, KeyError, AttributeError, OverflowError)


def plain(value: Any) -> Any:
    """construct's Containers as the plain dicts and lists a Layout gives (no ``_`` keys)."""
    if isinstance(value, Container):
        return {k: plain(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, ListContainer | list):
        return [plain(item) for item in value]
    return value


class Interpreted:
    """A Layout's interface, answered by ``construct`` interpreting its declaration."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.declaration = layout.declaration
        self.names, self.size = layout.names, layout.size

    def _error(self, exc: Exception) -> Exception:
        return self.layout._error(f"{self.layout.name}: {exc}")

    def read(self, data: bytes, offset: int = 0, **params: Any) -> tuple[dict[str, Any], int]:
        try:
            parsed = self.declaration.parse(data[offset:], **params)
            # construct reports no size for a variable layout: what it consumed rebuilds it.
            size = len(self.declaration.build(parsed, **params))
        except _FAILURES as exc:
            raise self._error(exc) from exc
        values: dict[str, Any] = plain(parsed)
        return values, offset + size

    def parse(self, data: bytes, **params: Any) -> dict[str, Any]:
        return self.read(data, 0, **params)[0]

    def build(self, values: Mapping[str, Any], **params: Any) -> bytes:
        try:
            built: bytes = self.declaration.build(dict(values), **params)
        except _FAILURES as exc:
            raise self._error(exc) from exc
        return built

    def unpack(self, data: bytes, offset: int = 0) -> tuple[Any, ...]:
        values = self.parse(data[offset:])
        return tuple(values[name] for name in self.names)

    def pack(self, *values: Any) -> bytes:
        return self.build(dict(zip(self.names, values, strict=True)))


def layouts() -> list[tuple[Any, str, Layout]]:
    """Every Layout the codecs hold, as ``(module, attribute, layout)``."""
    found = []
    for module in MODULES:
        for name, value in vars(module).items():
            if isinstance(value, Layout):
                found.append((module, name, value))
            elif isinstance(value, dict):
                found.extend(
                    (value, key, layout)
                    for key, layout in value.items()
                    if isinstance(layout, Layout)
                )
    return found


def clear_memos() -> None:
    rpc_codec._proposal.cache_clear()
    kms_codec._PRODUCT_GUIDS.clear()


@contextlib.contextmanager
def interpreted() -> Iterator[None]:
    """Within the block, every codec layout is run by ``construct``'s interpreter."""
    swapped = layouts()
    clear_memos()
    try:
        for owner, name, layout in swapped:
            _set(owner, name, Interpreted(layout))
        yield
    finally:
        for owner, name, layout in swapped:
            _set(owner, name, layout)
        clear_memos()


def _set(owner: Any, name: str, value: object) -> None:
    if isinstance(owner, dict):
        owner[name] = value
    else:
        setattr(owner, name, value)


def outcome(function: Callable[..., Any], *args: Any) -> tuple[object, ...]:
    """``("ok", result)`` or ``("error", type, call_id)``: what two paths must share."""
    try:
        return ("ok", function(*args))
    except Exception as exc:  # noqa: BLE001 - the two paths must fail alike, whatever the type
        return ("error", type(exc), getattr(exc, "call_id", None))


def same(function: Callable[..., Any], *args: Any) -> tuple[object, ...]:
    """The outcome of ``function`` on the derived layouts, once it equals the interpreted one."""
    clear_memos()
    derived = outcome(function, *args)
    with interpreted():
        reference = outcome(function, *args)
    assert derived == reference
    return derived
