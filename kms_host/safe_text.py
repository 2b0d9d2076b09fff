"""Text from clients made safe to write to a terminal: control characters escaped.

A KMS request carries a machine name of the client's choosing (spec 4.1: UTF-16, up to 63
characters), and the host writes it to console logs and to the ``clients`` table. Written
raw, ``\\x1b[2J`` clears the operator's screen, a newline forges a log line, and U+202E (RIGHT-
TO-LEFT OVERRIDE) makes the text read backwards. So whatever :meth:`str.isprintable` rejects
(C0 and C1 controls, DEL, Unicode format characters such as the bidi overrides and zero-width
characters, line and paragraph separators, unassigned code points) is written as its Python
escape (``\\x1b``, ``\\n``, ``\\u202e``), the form ``repr`` shows; the space is kept.

JSON output needs none of this: the encoder already writes controls as ``\\u`` escapes and,
with its default ``ensure_ascii``, every non-ASCII character too.
"""

from __future__ import annotations

__all__ = ["printable"]


def printable(text: str) -> str:
    """``text`` with every non-printable character replaced by its escape sequence."""
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in text
    )
