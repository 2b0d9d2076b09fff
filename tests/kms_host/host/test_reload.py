"""SIGHUP's re-reading of the ``[[scenario]]`` tables: swapped in whole, or the old kept."""

from __future__ import annotations

from pathlib import Path

import structlog

from kms_host.host.reload import reload_scenarios
from kms_host.policy.scenario import ScenarioBook


def test_reload_swaps_rules_or_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "k.toml"
    path.write_text("[[scenario]]\nclose = true\n[[scenario]]\ncount = 2\n")
    book = ScenarioBook()
    with structlog.testing.capture_logs() as logs:
        reload_scenarios(book, path)
        path.write_text('[[scenario]]\nhresult = "x"\n')
        reload_scenarios(book, path)
        reload_scenarios(book, None)
    assert len(book.rules) == 2
    assert [(e["event"], e.get("count"), e.get("key")) for e in logs] == [
        ("scenario_reloaded", 2, None),
        ("scenario_reload_failed", None, "scenario[0].hresult"),
        ("scenario_reload_failed", None, ""),
    ]


def test_reload_applies_nothing_when_another_section_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "k.toml"
    path.write_text("[[scenario]]\nclose = true\n")
    book = ScenarioBook()
    reload_scenarios(book, path)
    path.write_text(
        '[counting]\nmode = "bogus"\n[[scenario]]\ncount = 2\n[[scenario]]\ncount = 3\n'
    )
    with structlog.testing.capture_logs() as logs:
        reload_scenarios(book, path)
    assert [rule.close for rule in book.rules] == [True]
    assert [(e["event"], e.get("key")) for e in logs] == [
        ("scenario_reload_failed", "counting.mode")
    ]
