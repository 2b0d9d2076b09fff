#!/usr/bin/env python3
"""Generate ``kms_host/data/catalog.json``, kms-host's own product catalog.

The daemon reads only that JSON file. This script is committed next to it so that every value
in it can be traced to a source:

* ``KmsDataBase.xml`` (py-kms, public domain, format "KmsData 2.0"; spec 8.2): applications,
  KMS counted IDs with threshold and default protocol, SKUs with GVLKs, the ePID data of the
  CSVLKs (GroupId, key-id range, release date) and the host builds (spec 6.2, 6.3, 8.4-8.6).
* Microsoft's host-key tables, transcribed in ``GROUPS`` below: which KMS counted IDs each
  host key (CSVLK group) activates. The XML's ``Activate`` lists are incomplete for Windows, so
  they are only checked against the table (every volume KMS ID the XML lists for a group's CSVLK
  must be covered by that group), never used as the authority.

Usage::

    python scripts/build_catalog.py ../shared/catalog/KmsDataBase.xml [--output PATH]

The script fails (exit status 1, with a message) when the XML contradicts an assumption below,
so that a new database version is reviewed rather than silently absorbed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO_ROOT / "kms_host" / "data" / "catalog.json"

# Application IDs (spec 8.4) and the stable keys the catalog gives them.
APPLICATION_KEYS = {
    "55c92734-d682-4d71-983e-d6ec3f16059f": "windows",
    "59a52881-a989-479d-af46-f275c6370663": "office2010",
    "0ff1ce15-a989-479d-af46-f275c6370663": "office",
}

# KMS counted IDs (spec 8.5), named for the coverage table below.
SERVER_2025 = "4b83307d-7788-50ff-8d1f-1861915bdb9d"
SERVER_2022 = "b74263e4-0f92-46c6-bcf8-c11d5efe2959"
SERVER_2019 = "8449b1fb-f0ea-497a-99ab-66ca96e9a0f5"
SERVER_2016 = "6e9fc069-257d-4bc4-b4a7-750514d32743"
SERVER_2012_R2 = "8456efd3-0c04-4089-8740-5b7238535a65"
SERVER_2012 = "8665cb71-468c-4aa3-a337-cb9bc9d5eaac"
SERVER_2008_R2_A = "0fc6ccaf-ff0e-4fae-9d08-4370785bf7ed"
SERVER_2008_R2_B = "ca87f5b6-cd46-40c0-b06d-8ecd57a4373f"
SERVER_2008_R2_C = "b2ca2689-a9a8-42d7-938d-cf8e9f201958"
SERVER_2008_A = "33e156e4-b76f-4a52-9f91-f641dd95ac48"
SERVER_2008_B = "8fe53387-3087-4447-8985-f75132215ac9"
SERVER_2008_C = "8a21fdf3-cbc5-44eb-83f3-fe284e6680a7"
MULTI_SESSION = "cbdcb1ba-e093-4c81-a463-10775291fdf9"  # Windows 10/11 Enterprise multi-session
WIN10 = "58e2134f-8e11-4d17-9cb2-91069c151148"  # 10/11 Pro, Enterprise, Education, LTSB 2015
WIN10_LTSB_2016 = "969fe3c0-a3ec-491a-9f25-423605deb365"
WIN10_LTSC_2019 = "11b15659-e603-4cf1-9c1f-f0ec01b81888"  # LTSC 2019/2021 (and 11 LTSC 2024)
WIN10_UNKNOWN = "d27cd636-1962-44e9-8b4f-27b6c23efb85"
CHINA_GOV = "7ba0bf23-d0f5-4072-91d9-d55af5a481b6"
WIN81 = "cb8fc780-2c05-495a-9710-85afffc904d7"
WIN8 = "3c40b358-5948-45af-923b-53d21fcc7e79"
WIN7 = "7fde5219-fbfa-484a-82c9-34d1ad53e856"
VISTA = "212a64dc-43b1-4d3d-a30c-2fc69d2095c6"
OFFICE_2010 = "e85af946-2e25-47b7-83e1-bebcebeac611"
OFFICE_2013 = "e6a6f1bf-9d40-40c3-aa9f-c77ba21578c0"
OFFICE_2016 = "85b5f61b-320b-4be3-814a-b76b2bfafc82"
OFFICE_2019 = "617d9eb1-ef36-4f82-86e0-a65ae07b96c6"
OFFICE_2021 = "86d50b16-4808-41af-b83b-b338274318b2"
OFFICE_2024 = "1b4db7eb-4057-5ddf-91e0-36dec72071f5"

# Volume KMS IDs that no host key covers on purpose (retail and preview ones are excluded by
# their XML flags); the build fails if any other KMS ID ends up uncovered.
UNCOVERED = {WIN10_UNKNOWN: "no SKU and no CSVLK in the XML lists it; the product is unknown"}

# Product-key-group hierarchy of the Vista/2008 and 7/2008 R2 generations (Microsoft TechNet
# ff793412, "Determining Product Key Needs"): Client VL < Server Group A < B < C, and a key
# of the newer generation also activates the previous generation.
_S2008_A = (SERVER_2008_A,)
_S2008_AB = (*_S2008_A, SERVER_2008_B)
_S2008_ABC = (*_S2008_AB, SERVER_2008_C)
_R2_A = (SERVER_2008_R2_A, *_S2008_A)
_R2_AB = (SERVER_2008_R2_A, SERVER_2008_R2_B, *_S2008_AB)
_R2_ABC = (SERVER_2008_R2_A, SERVER_2008_R2_B, SERVER_2008_R2_C, *_S2008_ABC)
_CLIENTS_7 = (WIN7, VISTA)
_CLIENTS_8 = (WIN8, *_CLIENTS_7)
_CLIENTS_81 = (WIN81, *_CLIENTS_8)
# Server lines of Microsoft's current table ("KMS activation planning", 2024-11-12): each
# server key activates its own and every older server version, all editions.
_SERVERS_2012 = (SERVER_2012, *_R2_ABC)
_SERVERS_2012_R2 = (SERVER_2012_R2, *_SERVERS_2012)
_SERVERS_2016 = (SERVER_2016, *_SERVERS_2012_R2)
_SERVERS_2019 = (SERVER_2019, MULTI_SESSION, *_SERVERS_2016)
_SERVERS_2022 = (SERVER_2022, *_SERVERS_2019)
_SERVERS_2025 = (SERVER_2025, *_SERVERS_2022)
# Client columns of that table: Windows 10/11 (Pro, Enterprise, Education, Pro for
# Workstations, LTSB 2015 share WIN10), LTSB 2016, LTSC, 8.1 and 7; no Vista, no 8.
_CLIENTS_HOST_10 = (WIN10, WIN81, WIN7)
_CLIENTS_2016 = (WIN10, WIN10_LTSB_2016, WIN81, WIN7)
_CLIENTS_2019 = (*_CLIENTS_2016, WIN10_LTSC_2019)

_MS_TABLE = "Microsoft's host-key table (csvlk-scope.md, 'KMS activation planning' 2024-11-12)"
_MS_HIERARCHY = (
    "Microsoft's Vista/7-era product-key-group hierarchy (TechNet ff793412: Client VL < "
    "Server A < B < C; a newer generation's key also activates the previous generation)"
)
_MS_OFFICE = (
    "Microsoft: one host key per Office version ('Configure a KMS host computer ... Office')"
)


@dataclass(frozen=True)
class GroupSpec:
    """One host-key group: its catalog key, the XML CSVLK carrying its ePID data, its coverage."""

    key: str
    name: str
    csvlk: str  # DisplayName of the XML CsvlkItem with GroupId, key range and release date
    covers: tuple[str, ...]
    basis: str


# fmt: off
GROUPS: tuple[GroupSpec, ...] = (
    GroupSpec("windows-server-2025", "Windows Server 2025", "Windows Server 2025",
              (*_SERVERS_2025, *_CLIENTS_2019), _MS_TABLE),
    GroupSpec("windows-server-2022", "Windows Server 2022", "Windows Server 2022",
              (*_SERVERS_2022, *_CLIENTS_2019), _MS_TABLE),
    GroupSpec("windows-server-2019", "Windows Server 2019", "Windows Server 2019",
              (*_SERVERS_2019, *_CLIENTS_2019), _MS_TABLE),
    GroupSpec("windows-server-2016", "Windows Server 2016", "Windows Server 2016",
              (*_SERVERS_2016, *_CLIENTS_2016), _MS_TABLE),
    GroupSpec("windows-10", "Windows 10 (client host)", "Windows 10 2015 VL",
              _CLIENTS_HOST_10, _MS_TABLE),
    GroupSpec("windows-server-2012-r2", "Windows Server 2012 R2", "Windows Server 2012 R2",
              (*_SERVERS_2012_R2, *_CLIENTS_81), _MS_HIERARCHY),
    GroupSpec("windows-server-2012", "Windows Server 2012", "Windows Server 2012",
              (*_SERVERS_2012, *_CLIENTS_8), _MS_HIERARCHY),
    GroupSpec("windows-8.1", "Windows 8.1 (client host)", "Windows 8.1",
              _CLIENTS_81, _MS_HIERARCHY),
    GroupSpec("windows-8", "Windows 8 (client host)", "Windows 8", _CLIENTS_8, _MS_HIERARCHY),
    GroupSpec("windows-server-2008-r2-c", "Windows Server 2008 R2 Group C (Datacenter)",
              "Windows Server 2008 R2 C (Datacenter)", (*_R2_ABC, *_CLIENTS_7), _MS_HIERARCHY),
    GroupSpec("windows-server-2008-r2-b", "Windows Server 2008 R2 Group B (Standard, Enterprise)",
              "Windows Server 2008 R2 B (Standard & Enterprise)", (*_R2_AB, *_CLIENTS_7),
              _MS_HIERARCHY),
    GroupSpec("windows-server-2008-r2-a", "Windows Server 2008 R2 Group A (Web, HPC)",
              "Windows Server 2008 R2 A (Web & HPC)", (*_R2_A, *_CLIENTS_7), _MS_HIERARCHY),
    GroupSpec("windows-7", "Windows 7 (client host)", "Windows 7", _CLIENTS_7, _MS_HIERARCHY),
    GroupSpec("windows-server-2008-c", "Windows Server 2008 Group C (Datacenter)",
              "Windows Server 2008 C (Datacenter)", (*_S2008_ABC, VISTA), _MS_HIERARCHY),
    GroupSpec("windows-server-2008-b", "Windows Server 2008 Group B (Standard, Enterprise)",
              "Windows Server 2008 B (Standard & Enterprise)", (*_S2008_AB, VISTA),
              _MS_HIERARCHY),
    GroupSpec("windows-server-2008-a", "Windows Server 2008 Group A (Web, HPC)",
              "Windows Server 2008 A (Web & HPC)", (*_S2008_A, VISTA), _MS_HIERARCHY),
    GroupSpec("windows-vista", "Windows Vista (client host)", "Windows Vista (1 of 2)",
              (VISTA,), _MS_HIERARCHY),
    GroupSpec("windows-china-gov", "Windows 10/11 China Government",
              "Windows 10 China Government", (CHINA_GOV,),
              "own CSVLK (spec 6.6; XML CanMapToDefaultCsvlk=false); not in Microsoft's table"),
    GroupSpec("office-ltsc-2024", "Office LTSC 2024", "Office LTSC 2024", (OFFICE_2024,),
              _MS_OFFICE),
    GroupSpec("office-ltsc-2021", "Office LTSC 2021", "Office LTSC 2021", (OFFICE_2021,),
              _MS_OFFICE),
    GroupSpec("office-2019", "Office 2019", "Office 2019 VL", (OFFICE_2019,), _MS_OFFICE),
    GroupSpec("office-2016", "Office 2016", "Office 2016 VL", (OFFICE_2016,), _MS_OFFICE),
    GroupSpec("office-2013", "Office 2013", "Office 2013 VL", (OFFICE_2013,), _MS_OFFICE),
    GroupSpec("office-2010", "Office 2010", "Office 2010 VL", (OFFICE_2010,), _MS_OFFICE),
)
# fmt: on

# Release dates the XML lacks for a modelled CSVLK, with where ours come from.
CSVLK_DATE_FIXES = {
    "Windows Server 2012": ("2012-10-26", "spec 6.3 (release of build 9200)"),
    "Office LTSC 2024": ("2024-09-16", "Office LTSC 2024 general availability"),
}
# Groups whose ePID data is doubtful, with the reason.
UNCERTAIN_GROUPS = {
    "office-ltsc-2024": (
        "the XML gives no release date and the same key-id range as Office 2019, and its KMS ID "
        "is probably a placeholder (spec 6.3, 8.5)"
    ),
}
# Spec 6.2, the team's table of server-capable host builds: platform id and release date.
# It corrects the release dates of the databases (vlmcsd's kmd has 2001 typos for 9200/7601).
SPEC_HOST_BUILDS = {
    6002: (55041, "2009-05-26"),
    7601: (55041, "2011-02-22"),
    9200: (5426, "2012-10-26"),
    9600: (6401, "2013-10-17"),
    14393: (3612, "2016-08-02"),
    17763: (3612, "2018-10-02"),
    20348: (3612, "2021-08-18"),
    26100: (3612, "2024-11-01"),
}
# Spec 6.6: an unknown Windows KMS ID maps to the default "Windows" CSVLK slot, which the
# China Government key is not (it needs its own slot, XML CanMapToDefaultCsvlk=false).
NOT_DEFAULT = {"windows-china-gov"}

NOTES = (
    "Windows scope: Microsoft's host-key table (csvlk-scope.md) for windows-server-2016..2025 "
    "and the windows-10 client host. Groups older than that table follow Microsoft's Vista/7-era "
    "product-key-group hierarchy (Client VL < Server A < B < C, a key of a newer generation also "
    "activates the previous one), extended to the 2012/8 and 2012 R2/8.1 generations. Windows "
    "Vista and Windows 8 are therefore covered only by groups up to windows-server-2012-r2 / "
    "windows-8.1 (the XML agrees: its Windows 7 key lists Vista, its Windows 8 key lists 8), "
    "never by 2016 and later keys, which Microsoft's current table omits them from.",
    "Retail and preview KMS IDs (XML IsRetail/IsPreview: 'can't be activated with a genuine KMS "
    "server') are covered by no group, so a strict host answers 0xC004F042 as a genuine one does. "
    "This includes Windows 10/11 (Retail) e1c51358 (Home editions) although the XML lists it in "
    "its Windows 10 CSVLK Activate lists: Microsoft's table names no Home edition for any host "
    "key and Microsoft publishes no GVLK for Home, which is not a volume product.",
    "Windows 11 shares KMS ID 58e2134f with Windows 10, and Windows 11 Enterprise LTSC 2024 "
    "shares SKU, GVLK and KMS ID 11b15659 with Windows 10 LTSC 2019/2021 in the XML: per-KMS-ID "
    "scope cannot tell them apart, so the Server 2016/2019/2022 and windows-10 groups also cover "
    "Windows 11 (Microsoft lists Windows 11 only from Server 2022) and windows-server-2022/2019 "
    "also cover LTSC 2024 (Microsoft: Server 2025 only).",
    "Windows 10/11 Enterprise multi-session (cbdcb1ba, threshold 5) is covered by "
    "windows-server-2019 and later: the XML's only CSVLK listing it is the Server 2019 "
    "(Azure-only) key, which is not modelled separately.",
    "Windows 10/11 China Government (7ba0bf23) has its own CSVLK (GroupId 3858) and is covered "
    "only by windows-china-gov; no other group covers it.",
    "Office: one host key per version, each activating only that version's KMS ID; Project and "
    "Visio are SKUs under each version's KMS ID. Office 2010 is its own application; Office 2013 "
    "and later share one application and count.",
    "Unknown KMS IDs (spec 6.6, 8.5 caveat): the application's default_groups, newest first; "
    "the first in scope provides the ePID. windows-china-gov is not a default (own slot).",
    "uncertain=true marks KMS IDs that are UUID version 5, i.e. placeholders made up by the "
    "database authors rather than IDs Microsoft clients are known to send (spec 8.5), and host "
    "key groups whose ePID data is doubtful; accept and log unknown KMS IDs by default.",
    "The XML's Windows 10 2016 and 2019 (LTSB/LTSC client-host) CSVLKs are not modelled: "
    "Microsoft's table has one Windows 10 client-host row (LTSB 2015), and their Activate lists "
    "disagree (the 2016 key lists LTSC 2019, the 2019 key omits LTSB 2016). LTSB/LTSC clients "
    "are covered by the server groups.",
    "Each group's ePID data (epid_group_id, key-id range, release date, min_host_build from "
    "InvalidWinBuild, spec 6.2) comes from the XML CsvlkItem named in its note.",
)


class SourceError(Exception):
    """The XML contradicts an assumption of this script; the message says which."""


@dataclass
class Application:
    """An ``AppItem`` (spec 8.4); ``default_groups`` is filled in by :func:`_link`."""

    id: str
    key: str
    name: str
    threshold: int
    default_groups: list[str] = field(default_factory=list)


@dataclass
class KmsId:
    """A ``KmsItem`` (spec 8.5); coverage and uncertainty are filled in by :func:`_link`."""

    id: str
    name: str
    application: str
    threshold: int
    default_protocol: str
    retail: bool
    preview: bool
    uncertain: bool = False
    note: str | None = None
    host_key_groups: list[str] = field(default_factory=list)


@dataclass
class Sku:
    """A ``SkuItem`` (spec 8.6): one edition and its GVLK."""

    id: str
    name: str
    gvlk: str | None
    kms_id: str
    gvlk_generated: bool


@dataclass
class Group:
    """A host-key group: coverage from ``GROUPS``, ePID data from its XML CSVLK (spec 6.3)."""

    key: str
    name: str
    application: str
    epid_group_id: int
    min_key_id: int
    max_key_id: int
    release_date: str
    min_host_build: int
    kms_ids: list[str]
    uncertain: bool
    note: str


@dataclass
class HostBuild:
    """A ``WinBuild`` (spec 6.2)."""

    build: int
    name: str
    platform_id: int
    release_date: str
    server: bool
    ndr64: bool
    epid: bool


def _guid(text: str | None) -> str:
    """Normalise a GUID written with or without braces (spec 8.2) to lowercase 8-4-4-4-12."""
    if not text:
        raise SourceError("missing GUID")
    return str(uuid.UUID(text.strip("{}")))


def _flag(element: ET.Element, name: str) -> bool:
    return element.get(name, "false").lower() == "true"


def _date(element: ET.Element) -> str:
    """``ReleaseDate="2018-10-02T00:00:00Z"`` -> ``2018-10-02`` (empty if absent)."""
    return element.get("ReleaseDate", "").split("T", 1)[0]


def _products(
    root: ET.Element, notes: list[str]
) -> tuple[list[Application], dict[str, KmsId], list[Sku]]:
    """Applications, KMS IDs and SKUs of the XML's ``AppItems``."""
    apps: list[Application] = []
    kms_ids: dict[str, KmsId] = {}
    skus: list[Sku] = []
    for app in root.iterfind("AppItems/AppItem"):
        key = APPLICATION_KEYS[_guid(app.get("Id"))]
        cache = int(app.get("MinActiveClients", "0"))  # spec 8.2: 2 x threshold
        if cache == 0 or cache % 2:
            raise SourceError(f"application {key}: MinActiveClients {cache} is not 2 x threshold")
        apps.append(Application(_guid(app.get("Id")), key, app.get("DisplayName", ""), cache // 2))
        for item in app.iterfind("KmsItem"):
            kms = KmsId(
                id=_guid(item.get("Id")),
                name=item.get("DisplayName", ""),
                application=key,
                threshold=int(item.get("NCountPolicy", "25")),
                default_protocol=item.get("DefaultKmsProtocol", "6.0"),  # XML schema default
                retail=_flag(item, "IsRetail"),
                preview=_flag(item, "IsPreview"),
            )
            kms_ids[kms.id] = kms
            if "DefaultKmsProtocol" not in item.attrib:
                notes.append(
                    f"XML KMS ID {kms.id} ({kms.name}) lacks DefaultKmsProtocol "
                    f"(attributes: {', '.join(sorted(item.attrib))}): the schema "
                    "default 6.0 is used."
                )
            skus.extend(
                Sku(
                    _guid(sku.get("Id")),
                    sku.get("DisplayName", ""),
                    sku.get("Gvlk") or None,
                    kms.id,
                    _flag(sku, "IsGeneratedGvlk"),
                )
                for sku in item.iterfind("SkuItem")
            )
    return apps, kms_ids, skus


def _host_builds(root: ET.Element, notes: list[str]) -> list[HostBuild]:
    """Host builds (spec 6.2), with the spec's platform ids checked and its dates enforced."""
    builds: list[HostBuild] = []
    for item in root.iterfind("WinBuilds/WinBuild"):
        build = HostBuild(
            build=int(item.get("BuildNumber", "")),
            name=item.get("DisplayName", ""),
            platform_id=int(item.get("PlatformId", "")),
            release_date=_date(item),
            server=_flag(item, "MayBeServer"),
            ndr64=_flag(item, "UsesNDR64"),
            epid=_flag(item, "UseForEpid"),
        )
        if build.build in SPEC_HOST_BUILDS:
            spec_platform, spec_date = SPEC_HOST_BUILDS[build.build]
            if build.platform_id != spec_platform:
                raise SourceError(f"build {build.build}: platform id differs from spec 6.2")
            if build.release_date != spec_date:
                notes.append(
                    f"Host build {build.build}: release date {build.release_date} in "
                    f"the XML, {spec_date} per spec 6.2 (used)."
                )
                build.release_date = spec_date
        builds.append(build)
    if sorted(b.build for b in builds if b.epid) != sorted(SPEC_HOST_BUILDS):
        raise SourceError("the XML's ePID-capable builds differ from spec 6.2")
    return sorted(builds, key=lambda b: b.build)


def _min_host_build(csvlk: ET.Element) -> int:
    """Oldest server-capable host build the CSVLK installs on (spec 6.2, ``InvalidWinBuild``)."""
    invalid = json.loads(csvlk.get("InvalidWinBuild") or "[]")
    if invalid != list(range(len(invalid))):
        raise SourceError(f"{csvlk.get('DisplayName')}: InvalidWinBuild {invalid} is no prefix")
    return sorted(SPEC_HOST_BUILDS)[len(invalid)]


def _check_activate_list(spec: GroupSpec, csvlk: ET.Element, kms_ids: dict[str, KmsId]) -> None:
    """Fail unless every defined volume KMS ID that the XML lists for the CSVLK is covered."""
    unknown = set(spec.covers) - set(kms_ids)
    if unknown:
        raise SourceError(f"{spec.key} covers KMS IDs missing from the XML: {sorted(unknown)}")
    listed = {_guid(a.get("KmsItem")) for a in csvlk.iterfind("Activate")}
    volume = {k for k in listed & set(kms_ids) if not (kms_ids[k].retail or kms_ids[k].preview)}
    if volume - set(spec.covers):
        raise SourceError(
            f"{spec.key}: the XML lists {sorted(volume - set(spec.covers))} "
            "but the group omits them"
        )


def _groups(root: ET.Element, kms_ids: dict[str, KmsId], notes: list[str]) -> list[Group]:
    """Host-key groups: Microsoft's coverage (``GROUPS``) plus the XML CSVLK's ePID data."""
    csvlks: dict[str, list[ET.Element]] = {}
    for item in root.iterfind("CsvlkItems/CsvlkItem"):
        csvlks.setdefault(item.get("DisplayName", ""), []).append(item)
    groups: list[Group] = []
    for spec in GROUPS:
        found = csvlks.get(spec.csvlk, [])
        if len(found) != 1:
            raise SourceError(f"{spec.key}: {len(found)} CSVLKs named {spec.csvlk!r}")
        csvlk = found[0]
        _check_activate_list(spec, csvlk, kms_ids)
        apps = {kms_ids[k].application for k in spec.covers}
        if len(apps) != 1:
            raise SourceError(f"{spec.key} covers KMS IDs of several applications: {apps}")
        note = f"Coverage: {spec.basis}. ePID data: XML CSVLK {spec.csvlk!r}"
        released = _date(csvlk)
        if not released:
            released, origin = CSVLK_DATE_FIXES[spec.csvlk]
            note += f"; its release date is missing, {released} from {origin}"
        if spec.key in UNCERTAIN_GROUPS:
            note += f". Uncertain: {UNCERTAIN_GROUPS[spec.key]}"
        groups.append(
            Group(
                key=spec.key,
                name=spec.name,
                application=apps.pop(),
                epid_group_id=int(csvlk.get("GroupId", "")),
                min_key_id=int(csvlk.get("MinKeyId", "")),
                max_key_id=int(csvlk.get("MaxKeyId", "")),
                release_date=released,
                min_host_build=_min_host_build(csvlk),
                kms_ids=sorted(set(spec.covers)),
                uncertain=spec.key in UNCERTAIN_GROUPS,
                note=note + ".",
            )
        )
    listed = {
        _guid(a.get("KmsItem"))
        for items in csvlks.values()
        for item in items
        for a in item.iterfind("Activate")
    }
    undefined = ", ".join(sorted(listed - set(kms_ids)))
    notes.append(
        f"XML Activate lists name KMS IDs the XML does not define (left out): {undefined}."
    )
    unmodelled = "; ".join(sorted(set(csvlks) - {g.csvlk for g in GROUPS}))
    notes.append(
        "XML CSVLKs not modelled as groups (lab, Azure-only, pre-release, second or "
        f"incomplete entries): {unmodelled}."
    )
    return _newest_first(groups)


def _newest_first(groups: list[Group]) -> list[Group]:
    """Newest release first; on a tie the broader key first, then by key (as the loader does)."""
    by_key = sorted(groups, key=lambda g: g.key)
    return sorted(by_key, key=lambda g: (g.release_date, len(g.kms_ids)), reverse=True)


def _link(apps: list[Application], kms_ids: dict[str, KmsId], groups: list[Group]) -> None:
    """Fill in each KMS ID's covering groups and uncertainty, and each application's defaults."""
    for kms in kms_ids.values():
        kms.host_key_groups = [g.key for g in groups if kms.id in g.kms_ids]
        kms.uncertain = uuid.UUID(kms.id).version == 5
        if kms.uncertain:
            kms.note = (
                "UUID version 5: probably a placeholder invented by the database authors; "
                "real clients may send another KMS ID (spec 8.5)."
            )
        elif kms.id in UNCOVERED:
            kms.note = UNCOVERED[kms.id]
        elif not (kms.host_key_groups or kms.retail or kms.preview):
            raise SourceError(f"volume KMS ID {kms.id} ({kms.name}) is covered by no group")
    for app in apps:
        app.default_groups = [
            g.key for g in groups if g.application == app.key and g.key not in NOT_DEFAULT
        ]


def build(xml_path: Path) -> str:
    """Return the catalog JSON text for the XML at ``xml_path`` (deterministic)."""
    raw = xml_path.read_bytes()
    root = ET.fromstring(raw)  # noqa: S314 -- a local, reviewed source file, not network input
    if root.tag != "KmsData" or root.get("Version") != "2.0":
        raise SourceError("not a KmsData 2.0 file (spec 8.2)")
    notes = list(NOTES)
    apps, kms_ids, skus = _products(root, notes)
    builds = _host_builds(root, notes)
    groups = _groups(root, kms_ids, notes)
    _link(apps, kms_ids, groups)
    document = {
        "source": (
            "Generated by scripts/build_catalog.py from KmsDataBase.xml (py-kms project, public "
            f"domain; KmsData {root.get('Version')} by {root.get('Author')}; sha256 "
            f"{hashlib.sha256(raw).hexdigest()}) and Microsoft's host-key tables transcribed in "
            "that script. Edit the script and regenerate; do not edit this file by hand."
        ),
        "notes": notes,
        "applications": [asdict(a) for a in sorted(apps, key=lambda a: a.key)],
        "kms_ids": [
            asdict(k) for k in sorted(kms_ids.values(), key=lambda k: (k.application, k.name))
        ],
        "skus": [asdict(s) for s in sorted(skus, key=lambda s: (s.name, s.id))],
        "host_key_groups": [asdict(g) for g in groups],
        "host_builds": [asdict(b) for b in builds],
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: write the catalog JSON, or explain why the XML is refused."""
    parser = argparse.ArgumentParser(description="Generate kms_host/data/catalog.json.")
    parser.add_argument("xml", type=Path, help="path to KmsDataBase.xml")
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"where to write the JSON (default: {DEFAULT_OUTPUT})",
    )
    args = parser.parse_args(argv)
    try:
        text = build(args.xml)
    except (SourceError, KeyError, ValueError, OSError, ET.ParseError) as exc:
        print(f"build_catalog: {args.xml}: {exc}", file=sys.stderr)
        return 1
    args.output.write_text(text, encoding="utf-8", newline="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
