"""Runtime readers and writers derived from the ``construct`` declarations of the schemas.

Why: every wire layout is declared once, with ``construct``, in the ``schema`` module of its
layer (architecture 4.2). Interpreting a ``construct`` Struct field by field costs far more
than the protocol's work per message, so each declaration is turned, at import, into a plan
of ``struct.Struct`` runs and bounded variable-length steps. The plan is derived from the
declaration, never written beside it: a declaration that uses a construct this module does
not know is refused at import with ``TypeError``, so a field cannot be read one way by
``construct`` and another way here. ``tests/protocol/test_layout.py`` holds the plan to the
interpreted declaration on captured bytes and generated values.

What the schemas may use: little-endian integers (``Int8ul`` ... ``Int64ul``), ``Bytes`` of a
fixed length or of a length given by an earlier field (``this.x``), ``Padding`` of a fixed or
computed length, ``Rebuild`` (computed when building, read as written), ``Array`` whose count
is an earlier field, ``If`` around a fixed-size field, a nested ``Struct``, and a final
``GreedyBytes``. Lengths and conditions are ``construct`` expressions (``this``, ``len_``),
which evaluate on the plain dicts used here as they do on construct's Containers; build-time
parameters (``pfc_flags=...``) are visible as ``this._params`` exactly as in ``construct``.

Every read is bounded by the data it is given, and every failure, in either direction, is
raised as the one malformed-input error of the layer that owns the layout.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any, Final

from construct import (
    Array,
    Bytes,
    Construct,
    FormatField,
    GreedyBytes,
    IfThenElse,
    Padded,
    Pass,
    Rebuild,
    Renamed,
    Struct,
)
from construct.expr import BinExpr, FuncPath, Path, UniExpr

from protocol.errors import ProtocolError

__all__ = ["Layout"]

_Context = dict[str, Any]
_Expression = Callable[[_Context], Any]
_FORMATS: Final = frozenset("BHILQ")


def _expression(value: object) -> _Expression:
    """A construct length, count or condition as a plain closure over the values so far.

    ``construct`` evaluates ``this`` expressions by walking their objects on every call;
    the schemas use few of them (field references, arithmetic, ``len_``), so each is turned
    into a closure once. Anything else is refused, as for the layouts themselves.
    """
    if not callable(value):
        return lambda _context: value
    parts = vars(value)  # construct's expression classes keep their operands private
    if isinstance(value, Path):
        return _path(parts["_Path__field"], parts["_Path__parent"])
    if isinstance(value, BinExpr):
        op, left, right = parts["op"], _expression(parts["lhs"]), _expression(parts["rhs"])
        return lambda context: op(left(context), right(context))
    if isinstance(value, UniExpr):
        unary, operand = parts["op"], _expression(parts["operand"])
        return lambda context: unary(operand(context))
    if isinstance(value, FuncPath) and parts["_FuncPath__operand"] is not None:
        function, argument = parts["_FuncPath__func"], _expression(parts["_FuncPath__operand"])
        return lambda context: function(argument(context))
    raise TypeError(f"{value!r} is not an expression this module derives")


def _path(field: str | None, parent: Path[Any] | None) -> _Expression:
    """``this``, ``this.x`` or ``this.x.y`` (``_params`` included) as dict lookups."""
    if parent is None:
        return lambda context: context
    if vars(parent)["_Path__parent"] is None:
        return itemgetter(field)
    outer = _expression(parent)
    return lambda context: outer(context)[field]


class _Run:
    """Consecutive fixed-size fields, read and written with one ``struct.Struct``."""

    __slots__ = ("fetch", "names", "rebuilds", "size", "sizes", "struct")

    def __init__(self, fields: list[tuple[str | None, str, int | None, object]]) -> None:
        self.struct = struct.Struct("<" + "".join(fmt for _, fmt, _, _ in fields))
        self.size = self.struct.size
        named = [(name, size, rebuild) for name, _, size, rebuild in fields if name is not None]
        self.names = tuple(name for name, _, _ in named)
        self.fetch: Callable[[Mapping[str, Any]], tuple[Any, ...]] = (
            itemgetter(*self.names) if len(self.names) > 1 else lambda c: (c[self.names[0]],)
        )
        # Byte fields, whose length struct would pad or cut silently; Rebuild fields.
        self.sizes = tuple((i, size) for i, (_, size, _) in enumerate(named) if size is not None)
        self.rebuilds = tuple(
            (name, _expression(rebuild)) for name, _, rebuild in named if rebuild is not None
        )

    def read(self, data: bytes, offset: int, context: _Context) -> int:
        context.update(zip(self.names, self.struct.unpack_from(data, offset), strict=True))
        return offset + self.size

    def write(self, context: _Context, out: list[bytes]) -> None:
        for name, rebuild in self.rebuilds:
            context[name] = rebuild(context)
        values = self.fetch(context)
        _check_sizes(self.sizes, values)
        out.append(self.struct.pack(*values))


class _Step:
    """One variable-length part of a layout, named ``name`` in the parsed values."""

    __slots__ = ("expression", "inner", "name")

    def __init__(self, name: str, expression: object = None, inner: Any = None) -> None:
        self.name, self.inner = name, inner
        self.expression = _expression(expression)


class _VarBytes(_Step):
    def read(self, data: bytes, offset: int, context: _Context) -> int:
        end: int = offset + self.expression(context)
        if end > len(data):
            raise struct.error(f"{self.name} needs {end - offset} bytes, {len(data) - offset} left")
        context[self.name] = bytes(data[offset:end])
        return end

    def write(self, context: _Context, out: list[bytes]) -> None:
        raw = context[self.name]
        if len(raw) != self.expression(context):
            raise struct.error(f"{self.name} is {len(raw)} bytes, its length field says otherwise")
        out.append(raw)


class _Pad(_Step):
    def read(self, data: bytes, offset: int, context: _Context) -> int:
        end: int = offset + self.expression(context)
        if end > len(data):
            raise struct.error(f"padding needs {end - offset} bytes, {len(data) - offset} left")
        return end

    def write(self, context: _Context, out: list[bytes]) -> None:
        out.append(bytes(self.expression(context)))


class _Optional(_Step):
    """``If(condition, Bytes(n))``: the field is there, or None."""

    def read(self, data: bytes, offset: int, context: _Context) -> int:
        if not self.expression(context):
            context[self.name] = None
            return offset
        end: int = offset + self.inner
        if end > len(data):
            raise struct.error(f"{self.name} needs {self.inner} bytes, {len(data) - offset} left")
        context[self.name] = bytes(data[offset:end])
        return end

    def write(self, context: _Context, out: list[bytes]) -> None:
        if self.expression(context):
            raw = context[self.name]
            _check_sizes(((0, self.inner),), (raw,))
            out.append(bytes(raw))


class _Nested(_Step):
    def read(self, data: bytes, offset: int, context: _Context) -> int:
        values, end = self.inner.read_from(data, offset, {})
        context[self.name] = values
        return int(end)

    def write(self, context: _Context, out: list[bytes]) -> None:
        self.inner.write_to(context[self.name], out)


class _Array(_Step):
    def read(self, data: bytes, offset: int, context: _Context) -> int:
        items = []
        read_from = self.inner.read_from
        for _ in range(self.expression(context)):
            item, offset = read_from(data, offset, {})
            items.append(item)
        context[self.name] = items
        return offset

    def write(self, context: _Context, out: list[bytes]) -> None:
        items = context[self.name]
        if len(items) != self.expression(context):
            raise struct.error(
                f"{self.name} has {len(items)} items, its count field says otherwise"
            )
        for item in items:
            self.inner.write_to(item, out)


class _Rest(_Step):
    def read(self, data: bytes, offset: int, context: _Context) -> int:
        context[self.name] = bytes(data[offset:])
        return len(data)

    def write(self, context: _Context, out: list[bytes]) -> None:
        out.append(context[self.name])


def _check_sizes(sizes: tuple[tuple[int, int], ...], values: tuple[Any, ...]) -> None:
    for index, size in sizes:
        value = values[index]
        if not isinstance(value, bytes | bytearray) or len(value) != size:
            raise struct.error(f"a {size}-byte field was given {type(value).__name__}")


class Layout:
    """One ``construct`` Struct of a schema, run by the plan derived from it.

    ``declaration`` stays the layout of record (``construct`` can parse and build with it,
    as the tests do); :meth:`read`, :meth:`parse` and :meth:`build` give the same values as
    its ``parse``/``build``, with byte fields as ``bytes`` and arrays as lists of dicts.
    A layout of fixed-size fields only also offers :meth:`unpack` and :meth:`pack`, on
    tuples in declaration order, for the messages of every activation.
    """

    __slots__ = ("_error", "_fixed", "_rebuilds", "_steps", "declaration", "name", "names", "size")

    def __init__(self, name: str, declaration: Struct, error: type[ProtocolError]) -> None:
        self.name, self.declaration, self._error = name, declaration, error
        self._steps: tuple[Any, ...] = tuple(_plan(declaration, name))
        runs = [step for step in self._steps if isinstance(step, _Run)]
        self._rebuilds = any(run.rebuilds for run in runs)
        fixed = len(self._steps) == 1 and len(runs) == 1
        self._fixed: _Run | None = runs[0] if fixed else None
        self.size: int | None = runs[0].size if fixed else None
        self.names: tuple[str, ...] = runs[0].names if fixed else ()

    def read(self, data: bytes, offset: int = 0, **params: Any) -> tuple[dict[str, Any], int]:
        """The values at ``offset`` and the offset after them; extra bytes are not read."""
        context: _Context = {"_params": params} if params else {}
        try:
            for step in self._steps:
                offset = step.read(data, offset, context)
        except (struct.error, TypeError, ValueError) as exc:
            raise self._error(f"cannot parse {self.name}: {exc}") from exc
        if params:
            del context["_params"]
        return context, offset

    def parse(self, data: bytes, **params: Any) -> dict[str, Any]:
        """The values at the start of ``data``."""
        return self.read(data, 0, **params)[0]

    def build(self, values: Mapping[str, Any], **params: Any) -> bytes:
        """The bytes of ``values``; ``Rebuild`` fields are computed, padding is zeros."""
        out: list[bytes] = []
        try:
            self.write_to({**values, "_params": params} if params else values, out)
        except (struct.error, TypeError, ValueError, KeyError, AttributeError) as exc:
            raise self._error(f"cannot build {self.name}: {exc!r}") from exc
        return b"".join(out)

    def read_from(self, data: bytes, offset: int, context: _Context) -> tuple[_Context, int]:
        """:meth:`read` into ``context``, raising ``struct.error`` (for nested layouts)."""
        for step in self._steps:
            offset = step.read(data, offset, context)
        return context, offset

    def write_to(self, values: Mapping[str, Any], out: list[bytes]) -> None:
        """Append the bytes of ``values`` to ``out``, raising as it comes (nested layouts).

        ``Rebuild`` results go into a copy, never into the caller's values.
        """
        context: Any = dict(values) if self._rebuilds else values
        for step in self._steps:
            step.write(context, out)

    def unpack(self, data: bytes, offset: int = 0) -> tuple[Any, ...]:
        """A fixed layout's values in declaration order (padding left out)."""
        assert self._fixed is not None, f"{self.name} is not a fixed layout"
        try:
            return self._fixed.struct.unpack_from(data, offset)
        except struct.error as exc:
            raise self._error(
                f"cannot parse {self.name}: needs {self._fixed.size} bytes, got "
                f"{max(len(data) - offset, 0)}"
            ) from exc

    def pack(self, *values: Any) -> bytes:
        """A fixed layout's bytes from its values in declaration order."""
        assert self._fixed is not None, f"{self.name} is not a fixed layout"
        try:
            _check_sizes(self._fixed.sizes, values)
            return self._fixed.struct.pack(*values)
        except struct.error as exc:
            raise self._error(f"cannot build {self.name}: {exc}") from exc


def _plan(declaration: Struct, name: str) -> list[Any]:
    """The steps of a Struct: fixed fields merged into runs, variable parts between them."""
    steps: list[Any] = []
    run: list[tuple[str | None, str, int | None, object]] = []
    for subcon in declaration.subcons:
        field_name = subcon.name if isinstance(subcon, Renamed) else None
        inner = subcon.subcon if isinstance(subcon, Renamed) else subcon
        fixed = _fixed_field(field_name, inner)
        if fixed is not None:
            run.append(fixed)
            continue
        if run:
            steps.append(_Run(run))
            run = []
        steps.append(_variable_step(field_name, inner, name))
    if run:
        steps.append(_Run(run))
    return steps


def _fixed_field(
    name: str | None, subcon: Construct[Any, Any]
) -> tuple[str | None, str, int | None, object] | None:
    """``(name, struct format, byte length to check, rebuild expression)`` or None."""
    rebuild = None
    if isinstance(subcon, Rebuild):
        rebuild, subcon = subcon.func, subcon.subcon
    if isinstance(subcon, FormatField) and subcon.fmtstr[0] == "<" and subcon.fmtstr[1] in _FORMATS:
        return name, subcon.fmtstr[1], None, rebuild
    if rebuild is not None:
        raise TypeError(f"Rebuild of {subcon!r} has no fixed struct format")
    if isinstance(subcon, Bytes) and isinstance(subcon.length, int):
        return name, f"{subcon.length}s", subcon.length, None
    if isinstance(subcon, Padded) and subcon.subcon is Pass and isinstance(subcon.length, int):
        return None, f"{subcon.length}x", None, None
    return None


def _variable_step(name: str | None, subcon: Construct[Any, Any], layout: str) -> _Step:
    if isinstance(subcon, Padded) and subcon.subcon is Pass:
        return _Pad("", subcon.length)
    if name is None:
        raise TypeError(f"{layout}: an unnamed {subcon!r} is not a layout this module derives")
    if isinstance(subcon, Bytes):
        return _VarBytes(name, subcon.length)
    if isinstance(subcon, Array) and not subcon.discard:
        return _Array(name, subcon.count, _element(subcon.subcon, f"{layout}.{name}"))
    if isinstance(subcon, Struct):
        return _Nested(name, None, _element(subcon, f"{layout}.{name}"))
    if (
        isinstance(subcon, IfThenElse)
        and subcon.elsesubcon is Pass
        and isinstance(subcon.thensubcon, Bytes)
        and isinstance(subcon.thensubcon.length, int)
    ):
        return _Optional(name, subcon.condfunc, subcon.thensubcon.length)
    if subcon is GreedyBytes:
        return _Rest(name)
    raise TypeError(f"{layout}: {name} / {subcon!r} is not a layout this module derives")


def _element(declaration: Construct[Any, Any], name: str) -> Layout:
    """An array element or nested Struct; its errors surface as its parent layout's."""
    if not isinstance(declaration, Struct):
        raise TypeError(f"{name}: array elements and nested fields must be Structs")
    return Layout(name, declaration, ProtocolError)
