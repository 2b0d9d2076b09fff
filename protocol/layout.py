"""Runtime readers and writers derived from the ``construct`` declarations of the schemas.

Why: every wire layout is declared once, with ``construct``, in the ``schema`` module of its
layer (architecture 4.2). Interpreting a ``construct`` Struct field by field costs far more
than the protocol's work per message, so each declaration is compiled, at import, into one
reader and one writer function, as ``construct``'s own ``compile()`` does, but for the few
constructs the schemas use and with plain dicts instead of Containers. The functions are
derived from the declaration, never written beside it: a declaration that uses a construct
this module does not know is refused at import with ``TypeError``, so a field cannot be read
one way by ``construct`` and another way here. ``tests/protocol/test_rpc_layouts.py`` and
``test_kms_layouts.py`` hold the derived functions to the interpreted declaration.

What the schemas may use: little-endian integers (``Int8ul`` ... ``Int64ul``), ``Bytes`` of a
fixed length or of a length given by an earlier field, ``Padding`` of a fixed or computed
length, ``Rebuild`` (computed when building, read as written), ``Array`` whose count is an
earlier field, ``If`` around a fixed-size ``Bytes``, a nested ``Struct``, and a final
``GreedyBytes``. Lengths, counts and conditions are ``construct`` expressions of ``this``
(field references, arithmetic, ``len_``); build-time parameters (``pfc_flags=...``) are
``this._params`` exactly as in ``construct``. Consecutive fixed-size fields become one
``struct.Struct``.

Every read is bounded by the data it is given, and every failure, in either direction, is
raised as the one malformed-input error of the layer that owns the layout. The generated
source is kept on the layout (:attr:`Layout.source`) for anyone who wants to read it.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Callable, Mapping
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

_FORMATS: Final = frozenset("BHILQ")
_FAILURES: Final = (struct.error, TypeError, ValueError, KeyError, AttributeError, OverflowError)

_Field = tuple[str | None, str, int | None, str | None]
"""A fixed-size field: name (None for padding), struct format, byte length, Rebuild source."""
_OPERATORS: Final = {
    operator.add: "+",
    operator.sub: "-",
    operator.mul: "*",
    operator.floordiv: "//",
    operator.mod: "%",
    operator.and_: "&",
    operator.or_: "|",
    operator.xor: "^",
    operator.lshift: "<<",
    operator.rshift: ">>",
    operator.neg: "-",
    operator.eq: "==",
    operator.ne: "!=",
    operator.lt: "<",
    operator.le: "<=",
    operator.gt: ">",
    operator.ge: ">=",
}
"""The operators a length, count or condition may use, as Python spells them."""
_Reader = Callable[[bytes, int, dict[str, Any]], int]
_Writer = Callable[[Mapping[str, Any], list[bytes]], None]


def _expression(value: object) -> str:
    """Python source for a construct length, count or condition, over the dict ``this``.

    Fully parenthesised from the expression's tree, so that precedence is construct's.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return repr(value)
    parts = vars(value) if callable(value) else {}  # construct keeps the operands private
    if isinstance(value, Path):
        parent = parts["_Path__parent"]
        return "this" if parent is None else f"{_expression(parent)}[{parts['_Path__field']!r}]"
    if isinstance(value, BinExpr):
        left, right = _expression(parts["lhs"]), _expression(parts["rhs"])
        return f"({left} {_operator(parts['op'])} {right})"
    if isinstance(value, UniExpr):
        return f"({_operator(parts['op'])} {_expression(parts['operand'])})"
    if isinstance(value, FuncPath) and parts["_FuncPath__func"] is len:
        return f"len({_expression(parts['_FuncPath__operand'])})"
    raise TypeError(f"{value!r} is not an expression this module derives")


def _operator(function: object) -> str:
    spelling: str | None = _OPERATORS.get(function)  # type: ignore[call-overload]
    if spelling is None:
        raise TypeError(f"{function!r} is not an operator this module derives")
    return spelling


class _Compiler:
    """Emits the reader and writer of a Struct (and of the Structs nested in it)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {"Error": struct.error}
        self.rebuilds: dict[str, bool] = {}  # per writer: stores computed fields in its values

    def struct(self, declaration: Struct, label: str) -> str:
        """Emit ``read_N(data, offset, this) -> offset`` and ``write_N(this, out)``; return N."""
        number = str(len(self.rebuilds))
        self.rebuilds[number] = False
        read: list[str] = []
        write: list[str] = []
        run: list[_Field] = []
        for subcon in declaration.subcons:
            name, inner = _named(subcon)
            field = _fixed_field(name, inner)
            if field is not None:
                run.append(field)
                continue
            self._run(number, run, read, write)
            run = []
            self._variable(name, inner, f"{label}.{name}", read, write)
        self._run(number, run, read, write)
        self.lines += [f"def read_{number}(data, offset, this):", *read, "    return offset", ""]
        self.lines += [f"def write_{number}(this, out):", *write, "    return None", ""]
        return number

    def _run(self, number: str, run: list[_Field], read: list[str], write: list[str]) -> None:
        """One ``struct.Struct`` for consecutive fixed fields; byte lengths checked on write."""
        if not run:
            return
        packer = f"s{len(self.namespace)}"
        layout = self.namespace[packer] = struct.Struct("".join(["<", *(f for _, f, _, _ in run)]))
        names = [name for name, _, _, _ in run if name is not None]
        targets = "".join(f"this[{name!r}], " for name in names)
        unpacked = f"{packer}.unpack_from(data, offset)"  # bounds-checked by struct
        read.append(f"    {targets}= {unpacked}" if names else f"    {unpacked}")
        read.append(f"    offset += {layout.size}")
        for name, _, size, rebuild in run:
            if rebuild is not None:
                write.append(f"    this[{name!r}] = {rebuild}")
                self.rebuilds[number] = True
            elif size is not None:
                write.append(f"    if len(this[{name!r}]) != {size}:")
                write.append(f"        raise Error('{name} must be {size} bytes')")
        values = ", ".join(f"this[{name!r}]" for name in names)
        write.append(f"    out.append({packer}.pack({values}))")

    def _writer(self, number: str, value: str) -> str:
        """A call of ``write_N``, on a copy when it stores Rebuild fields in its values."""
        return (
            f"write_{number}(dict({value}), out)"
            if self.rebuilds[number]
            else (f"write_{number}({value}, out)")
        )

    def _variable(
        self,
        name: str | None,
        subcon: Construct[Any, Any],
        label: str,
        read: list[str],
        write: list[str],
    ) -> None:
        """Emit the lines of one variable-size member; refuse what is not listed above."""
        if isinstance(subcon, Padded) and subcon.subcon is Pass:
            length = _expression(subcon.length)
            read += [f"    offset += {length}", _past_the_end("offset", "padding")]
            write.append(f"    out.append(bytes({length}))")
        elif name is None:
            raise TypeError(f"{label}: an unnamed {subcon!r} is not a layout this module derives")
        elif isinstance(subcon, Bytes):
            self._bytes(name, _expression(subcon.length), read, write)
        elif isinstance(subcon, Array) and not subcon.discard:
            self._array(name, subcon, label, read, write)
        elif isinstance(subcon, Struct):
            nested = self.struct(subcon, label)
            read.append(f"    this[{name!r}] = item = {{}}")
            read.append(f"    offset = read_{nested}(data, offset, item)")
            write.append(f"    {self._writer(nested, f'this[{name!r}]')}")
        elif isinstance(subcon, IfThenElse) and _is_optional_bytes(subcon):
            self._optional(name, subcon, read, write)
        elif subcon is GreedyBytes:
            read += [f"    this[{name!r}] = bytes(data[offset:])", "    offset = len(data)"]
            write.append(f"    out.append(this[{name!r}])")
        else:
            raise TypeError(f"{label}: {name} / {subcon!r} is not a layout this module derives")

    @staticmethod
    def _bytes(name: str, length: str, read: list[str], write: list[str]) -> None:
        """``Bytes(this.x)``: as many bytes as an earlier field says."""
        read.append(f"    end = offset + {length}")
        read.append(_past_the_end("end", name))
        read.append(f"    this[{name!r}] = bytes(data[offset:end])")
        read.append("    offset = end")
        write.append(f"    if len(this[{name!r}]) != {length}:")
        write.append(f"        raise Error('{name} differs from its length field')")
        write.append(f"    out.append(this[{name!r}])")

    def _array(
        self, name: str, subcon: Array[Any, Any], label: str, read: list[str], write: list[str]
    ) -> None:
        """``Array(this.n, Struct(...))``: as many elements as an earlier field says."""
        element = self.struct(_struct(subcon.subcon, label), label)
        count = _expression(subcon.count)
        read.append(f"    items = this[{name!r}] = []")
        read.append(f"    for _ in range({count}):")
        read.append("        item = {}")
        read.append(f"        offset = read_{element}(data, offset, item)")
        read.append("        items.append(item)")
        write.append(f"    if len(this[{name!r}]) != {count}:")
        write.append(f"        raise Error('{name} differs from its count field')")
        write.append(f"    for item in this[{name!r}]:")
        write.append(f"        {self._writer(element, 'item')}")

    @staticmethod
    def _optional(
        name: str, subcon: IfThenElse[Any, Any], read: list[str], write: list[str]
    ) -> None:
        """``If(condition, Bytes(n))``: the field is there, or None."""
        field = subcon.thensubcon
        assert isinstance(field, Bytes)  # _is_optional_bytes
        condition, size = _expression(subcon.condfunc), field.length
        read.append(f"    if {condition}:")
        read.append(f"        this[{name!r}] = bytes(data[offset:offset + {size}])")
        read.append(f"        offset += {size}")
        read.append("    " + _past_the_end("offset", name))
        read.append("    else:")
        read.append(f"        this[{name!r}] = None")
        write.append(f"    if {condition}:")
        write.append(f"        if len(this[{name!r}]) != {size}:")
        write.append(f"            raise Error('{name} must be {size} bytes')")
        write.append(f"        out.append(this[{name!r}])")


def _past_the_end(offset: str, what: str) -> str:
    """The line that stops a read running past the data (every variable step has one)."""
    return f"    if {offset} > len(data): raise Error('{what} runs past the end of the data')"


def _named(subcon: Construct[Any, Any]) -> tuple[str | None, Construct[Any, Any]]:
    """A Struct member's name (None when unnamed) and the construct it names."""
    if isinstance(subcon, Renamed):
        return subcon.name, subcon.subcon
    return None, subcon


def _fixed_field(name: str | None, subcon: Construct[Any, Any]) -> _Field | None:
    """The field as part of a ``struct`` run, or None when its size is not fixed."""
    rebuild = None
    if isinstance(subcon, Rebuild):
        rebuild, subcon = _expression(subcon.func), subcon.subcon
    if isinstance(subcon, FormatField) and subcon.fmtstr[0] == "<" and subcon.fmtstr[1] in _FORMATS:
        return name, subcon.fmtstr[1], None, rebuild
    if rebuild is not None:
        raise TypeError(f"Rebuild of {subcon!r} has no fixed struct format")
    if isinstance(subcon, Bytes) and isinstance(subcon.length, int):
        return name, f"{subcon.length}s", subcon.length, None
    if isinstance(subcon, Padded) and subcon.subcon is Pass and isinstance(subcon.length, int):
        return None, f"{subcon.length}x", None, None
    return None


def _is_optional_bytes(subcon: Construct[Any, Any]) -> bool:
    return (
        isinstance(subcon, IfThenElse)
        and subcon.elsesubcon is Pass
        and isinstance(subcon.thensubcon, Bytes)
        and isinstance(subcon.thensubcon.length, int)
    )


def _struct(subcon: Construct[Any, Any], label: str) -> Struct:
    if not isinstance(subcon, Struct):
        raise TypeError(f"{label}: array elements must be Structs")
    return subcon


class Layout:
    """One ``construct`` Struct of a schema, run by the functions derived from it.

    ``declaration`` stays the layout of record (``construct`` can parse and build with it,
    as the tests do); :meth:`read`, :meth:`parse` and :meth:`build` give the same values as
    its ``parse``/``build``, with byte fields as ``bytes`` and arrays as lists of dicts.
    A layout of fixed-size fields only also offers :meth:`unpack` and :meth:`pack`, on
    tuples in declaration order, for the messages of every activation.
    """

    __slots__ = (
        "_copy",
        "_error",
        "_fixed",
        "_read",
        "_sizes",
        "_write",
        "declaration",
        "name",
        "names",
        "size",
        "source",
    )

    def __init__(self, name: str, declaration: Struct, error: type[ProtocolError]) -> None:
        self.name, self.declaration, self._error = name, declaration, error
        compiler = _Compiler()
        number = compiler.struct(declaration, name)
        self.source = "\n".join(compiler.lines)
        code = compile(self.source, f"<layout {name}>", "exec")
        exec(code, compiler.namespace)  # noqa: S102 - derived above from our declarations only
        self._read: _Reader = compiler.namespace[f"read_{number}"]
        self._write: _Writer = compiler.namespace[f"write_{number}"]
        self._copy = compiler.rebuilds[number]
        fields = [_fixed_field(*_named(subcon)) for subcon in declaration.subcons]
        fixed = [f for f in fields if f is not None and f[3] is None]
        is_fixed = len(fixed) == len(fields)
        self._fixed = (
            struct.Struct("".join(["<", *(f for _, f, _, _ in fixed)])) if is_fixed else None
        )
        named = [(name, size) for name, _, size, _ in fixed if name is not None] if is_fixed else []
        self.names: tuple[str, ...] = tuple(name for name, _ in named)
        self._sizes = tuple((i, size) for i, (_, size) in enumerate(named) if size is not None)
        self.size: int | None = self._fixed.size if self._fixed is not None else None

    def read(self, data: bytes, offset: int = 0, **params: Any) -> tuple[dict[str, Any], int]:
        """The values at ``offset`` and the offset after them; extra bytes are not read."""
        values: dict[str, Any] = {"_params": params} if params else {}
        try:
            offset = self._read(data, offset, values)
        except _FAILURES as exc:
            raise self._error(f"cannot parse {self.name}: {exc}") from exc
        if params:
            del values["_params"]
        return values, offset

    def parse(self, data: bytes, **params: Any) -> dict[str, Any]:
        """The values at the start of ``data``."""
        return self.read(data, 0, **params)[0]

    def build(self, values: Mapping[str, Any], **params: Any) -> bytes:
        """The bytes of ``values``; ``Rebuild`` fields are computed, padding is zeros."""
        context = (
            {**values, "_params": params} if params else dict(values) if self._copy else values
        )
        out: list[bytes] = []
        try:
            self._write(context, out)
        except _FAILURES as exc:
            raise self._error(f"cannot build {self.name}: {exc!r}") from exc
        return b"".join(out)

    def unpack(self, data: bytes, offset: int = 0) -> tuple[Any, ...]:
        """A fixed layout's values in declaration order (padding left out)."""
        assert self._fixed is not None, f"{self.name} is not a fixed layout"
        try:
            return self._fixed.unpack_from(data, offset)
        except struct.error as exc:
            got = max(len(data) - offset, 0)
            raise self._error(
                f"cannot parse {self.name}: needs {self._fixed.size} bytes, got {got}"
            ) from exc

    def pack(self, *values: Any) -> bytes:
        """A fixed layout's bytes from its values in declaration order."""
        assert self._fixed is not None, f"{self.name} is not a fixed layout"
        try:
            for index, size in self._sizes:
                if len(values[index]) != size:
                    raise struct.error(f"{self.names[index]} must be {size} bytes")
            return self._fixed.pack(*values)
        except _FAILURES as exc:
            raise self._error(f"cannot build {self.name}: {exc}") from exc
