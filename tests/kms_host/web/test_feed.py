"""The activation feed: bounded, newest first, and the log event's own field names."""

from __future__ import annotations

import dataclasses

from kms_host.host.observe import ActivationOutcome, Observers
from kms_host.web.feed import ActivationFeed


def outcome(machine: str, hresult: int = 0, result: str = "activated") -> ActivationOutcome:
    event = {"peer": "192.0.2.7:50000", "machine_name": machine, "result": result}
    event["hresult"] = f"0x{hresult:08X}"
    return ActivationOutcome(
        protocol="6.0",
        app="windows",
        host_key_group=None,
        hresult=hresult,
        result=result,
        latency_s=0.001,
        count=None,
        event=event,
    )


def test_keeps_the_newest_and_drops_the_oldest() -> None:
    feed = ActivationFeed(size=3)
    for index in range(5):
        feed.activation(outcome(f"pc-{index}"))
    assert [entry["machine_name"] for entry in feed.recent()] == ["pc-4", "pc-3", "pc-2"]
    assert [entry["id"] for entry in feed.recent(after=4)] == [5]
    assert [entry["id"] for entry in feed.recent(limit=1)] == [5]


def test_names_the_hresult_as_windows_does() -> None:
    feed = ActivationFeed()
    Observers(feed).activation(outcome("pc", 0xC004F06C, "refused"))
    (entry,) = feed.recent()
    assert (entry["hresult"], entry["hresult_name"]) == ("0xC004F06C", "SL_E_VL_INVALID_TIMESTAMP")
    assert (entry["peer"], entry["result"], entry["count"]) == ("192.0.2.7:50000", "refused", None)
    assert entry["timestamp"].endswith("Z")


def test_an_outcome_without_an_hresult_has_no_name() -> None:
    feed = ActivationFeed()
    feed.activation(dataclasses.replace(outcome("pc", 0, "dropped"), event={"result": "dropped"}))
    (entry,) = feed.recent()
    assert (entry["result"], entry["hresult"], entry["hresult_name"]) == ("dropped", None, None)
