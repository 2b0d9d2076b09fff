"""The host's identity: one ePID per host-key group and one HwId, stable across restarts.

A genuine host answers every request of a product group with the same ePID and the same
HwId (spec 6.5, 6.7, 10.16); an ePID that changes between two requests marks an emulator.
So they are generated once, realistically (spec 6.1-6.3: platform id of the host build, the
group's key-id range, an activation date between the group's and the build's release and
today), and kept in ``host-identity.json`` in the data dir. Groups added to the catalog later
get theirs on the next start. ``[host] epid.<group>`` and ``[host] hwid`` override them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from kms_host.config import HostConfig
from kms_host.errors import ConfigError, DataDirError
from kms_host.policy.catalog import Catalog, HostKeyGroup
from protocol.errors import EpidError, ProtocolError
from protocol.kms.epid import (
    Epid,
    format_hwid,
    generate_epid,
    generate_hwid,
    parse_epid,
    parse_hwid,
)

__all__ = ["IDENTITY_FILE", "HostIdentity", "load_identity"]

IDENTITY_FILE = "host-identity.json"
_FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class HostIdentity:
    """What the host tells clients about itself."""

    hwid: bytes
    epids: Mapping[str, str]
    """Host-key group key -> ePID text."""


def load_identity(
    data_dir: Path,
    *,
    catalog: Catalog,
    host: HostConfig,
    today: date,
    rng: Callable[[int], bytes],
) -> HostIdentity:
    """Load the stored identity, generate what is missing, apply configured overrides."""
    path = data_dir / IDENTITY_FILE
    stored_hwid, epids = _read(path)
    hwid_text = stored_hwid or format_hwid(generate_hwid(rng))
    changed = not path.exists()
    for group in catalog.host_key_groups:
        if group.key not in epids:
            epids[group.key] = str(_generate(group, catalog, host, today, rng))
            changed = True
    if changed:
        _write(path, {"version": _FORMAT_VERSION, "hwid": hwid_text, "epids": epids})
    return HostIdentity(hwid=_hwid(host, hwid_text), epids=_apply_overrides(epids, host, catalog))


def _generate(
    group: HostKeyGroup,
    catalog: Catalog,
    host: HostConfig,
    today: date,
    rng: Callable[[int], bytes],
) -> Epid:
    build = catalog.host_build(host.build)
    earliest = max(group.release_date, build.release_date)
    return generate_epid(
        platform_id=build.platform_id,
        group_id=group.epid_group_id,
        min_key_id=group.min_key_id,
        max_key_id=group.max_key_id,
        lcid=host.lcid,
        build=build.build,
        earliest=min(earliest, today),
        today=today,
        rng=rng,
    )


def _hwid(host: HostConfig, stored: str) -> bytes:
    text = host.hwid or stored
    try:
        return parse_hwid(text)
    except ProtocolError as exc:
        raise ConfigError(f"not 16 hex digits: {text!r}", key="host.hwid") from exc


def _apply_overrides(epids: dict[str, str], host: HostConfig, catalog: Catalog) -> dict[str, str]:
    known = {group.key for group in catalog.host_key_groups}
    result = dict(epids)
    for key, text in host.epid.items():
        if key not in known:
            raise ConfigError(f"unknown host-key group {key!r}", key=f"host.epid.{key}")
        try:
            parse_epid(text)
        except EpidError as exc:
            raise ConfigError(str(exc), key=f"host.epid.{key}") from exc
        result[key] = text
    return result


def _read(path: Path) -> tuple[str, dict[str, str]]:
    """The stored HwId text and ePIDs; empty when the host has never started here."""
    if not path.exists():
        return "", {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataDirError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:  # empty, truncated, not UTF-8: JSONDecodeError, UnicodeDecodeError
        raise DataDirError(
            f"{path} is not valid JSON ({exc}); remove it to generate a new identity"
        ) from None
    if not isinstance(data, dict) or data.get("version") != _FORMAT_VERSION:
        raise DataDirError(
            f"{path} is not a kms-host identity file; remove it to generate a new identity"
        )
    epids = data.get("epids", {})
    if not isinstance(epids, dict):
        raise DataDirError(f"{path}: 'epids' is not a table; remove it to generate a new identity")
    return str(data.get("hwid", "")), {str(k): str(v) for k, v in epids.items()}


def _write(path: Path, data: Mapping[str, object]) -> None:
    """Replace the file durably: its bytes on disk before the rename, the rename before return.

    Without the fsyncs, ext4 may commit the rename before the data (delayed allocation): a
    crash or a file-system error in the seconds after the first start left an empty
    identity file, and the host then refused to start until it was removed, which gives
    every client a new ePID.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        out.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
