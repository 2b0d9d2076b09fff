"""Text from clients made safe for a terminal."""

from __future__ import annotations

import pytest

from kms_host.cli.views import format_table
from kms_host.safe_text import printable


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("client01.lab.example", "client01.lab.example"),
        ("Büro-PC 日本", "Büro-PC 日本"),  # printable non-ASCII and the space stay
        ("a\x1b[31mb", "a\\x1b[31mb"),
        ("line\nforged\r", "line\\nforged\\r"),
        ("\x00\x1f\x7f", "\\x00\\x1f\\x7f"),
        ("\x80\x85\x9f", "\\x80\\x85\\x9f"),  # C1 controls
        ("abc\u202edcba\u2066", "abc\\u202edcba\\u2066"),  # bidi override and isolate
        ("zero\u200bwidth\ufeff", "zero\\u200bwidth\\ufeff"),
        ("tab\there\u2028", "tab\\there\\u2028"),
    ],
)
def test_non_printable_characters_are_escaped(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_table_cells_are_escaped_and_aligned_on_the_escape() -> None:
    table = format_table(["MACHINE", "PEER"], [["a\x1b[2Jb", "x"], ["c", "y"]], decorated=False)
    assert table.splitlines() == ["MACHINE    PEER", "a\\x1b[2Jb  x", "c          y"]
