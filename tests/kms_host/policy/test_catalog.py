"""The product catalog against its sources.

Expected values are transcribed from the team's specification (``kms-protocol.md`` sections 6.2,
6.3, 8.4, 8.5 and 8.6, themselves taken from Microsoft's GVLK tables and the emulators' data)
and from Microsoft's host-key table (``csvlk-scope.md``), not from the catalog's own output.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import date
from pathlib import Path
from typing import TypeVar

import pytest

from kms_host.policy.catalog import ALL_GROUPS, Catalog, CatalogError, HostKeyGroup
from kms_host.policy.catalog_file import load_catalog
from protocol.kms import ProtocolVersion

REPO_ROOT = Path(__file__).resolve().parents[3]
CATALOG_JSON = REPO_ROOT / "kms_host" / "data" / "catalog.json"
SOURCE_XML = REPO_ROOT.parent / "shared" / "catalog" / "KmsDataBase.xml"
T = TypeVar("T")

WINDOWS = uuid.UUID("55c92734-d682-4d71-983e-d6ec3f16059f")
OFFICE_2010_APP = uuid.UUID("59a52881-a989-479d-af46-f275c6370663")
OFFICE_APP = uuid.UUID("0ff1ce15-a989-479d-af46-f275c6370663")

# Spec 8.5: KMS counted ID, N, default protocol, flags (r = retail, p = preview, u = placeholder).
SPEC_KMS_IDS = """
212a64dc-43b1-4d3d-a30c-2fc69d2095c6 25 4 -   Windows Vista
7fde5219-fbfa-484a-82c9-34d1ad53e856 25 4 -   Windows 7
3c40b358-5948-45af-923b-53d21fcc7e79 25 5 -   Windows 8 (Volume)
bbb97b3b-8ca4-4a28-9717-89fabd42c4ac 25 5 r   Windows 8 (Retail)
cb8fc780-2c05-495a-9710-85afffc904d7 25 6 -   Windows 8.1 (Volume)
6d646890-3606-461a-86ab-598bb84ace82 25 6 r   Windows 8.1 (Retail)
58e2134f-8e11-4d17-9cb2-91069c151148 25 6 -   Windows 10/11 2015 (Volume)
e1c51358-fe3e-4203-a4a2-3b6b20c9734e 25 6 r   Windows 10/11 (Retail)
969fe3c0-a3ec-491a-9f25-423605deb365 25 6 -   Windows 10 2016 (Volume)
11b15659-e603-4cf1-9c1f-f0ec01b81888 25 6 -   Windows 10 2019 (Volume)
d27cd636-1962-44e9-8b4f-27b6c23efb85 25 6 -   Windows 10 Unknown (Volume)
7ba0bf23-d0f5-4072-91d9-d55af5a481b6 25 6 -   Windows 10/11 China Government
cbdcb1ba-e093-4c81-a463-10775291fdf9 5  6 -   Windows 10 ServerRdsh
33e156e4-b76f-4a52-9f91-f641dd95ac48 5  4 -   Windows Server 2008 A
8fe53387-3087-4447-8985-f75132215ac9 5  4 -   Windows Server 2008 B
8a21fdf3-cbc5-44eb-83f3-fe284e6680a7 5  4 -   Windows Server 2008 C
0fc6ccaf-ff0e-4fae-9d08-4370785bf7ed 5  4 -   Windows Server 2008 R2 A
ca87f5b6-cd46-40c0-b06d-8ecd57a4373f 5  4 -   Windows Server 2008 R2 B
b2ca2689-a9a8-42d7-938d-cf8e9f201958 5  4 -   Windows Server 2008 R2 C
8665cb71-468c-4aa3-a337-cb9bc9d5eaac 5  5 -   Windows Server 2012
8456efd3-0c04-4089-8740-5b7238535a65 5  6 -   Windows Server 2012 R2
6e9fc069-257d-4bc4-b4a7-750514d32743 5  6 -   Windows Server 2016
8449b1fb-f0ea-497a-99ab-66ca96e9a0f5 5  6 -   Windows Server 2019
b74263e4-0f92-46c6-bcf8-c11d5efe2959 5  6 -   Windows Server 2022
4b83307d-7788-50ff-8d1f-1861915bdb9d 5  6 u   Windows Server 2025
6d5f5270-31ac-433e-b90a-39892923c657 5  6 p   Windows Server Preview
e85af946-2e25-47b7-83e1-bebcebeac611 5  4 -   Office 2010
e6a6f1bf-9d40-40c3-aa9f-c77ba21578c0 5  5 -   Office 2013
aa4c7968-b9da-4680-92b6-acb25e2f866c 5  5 p   Office 2013 (Pre-release)
85b5f61b-320b-4be3-814a-b76b2bfafc82 5  6 -   Office 2016
617d9eb1-ef36-4f82-86e0-a65ae07b96c6 5  6 -   Office 2019
86d50b16-4808-41af-b83b-b338274318b2 5  6 -   Office LTSC 2021
1b4db7eb-4057-5ddf-91e0-36dec72071f5 5  6 u   Office LTSC 2024
"""
KMS = {
    row.split(maxsplit=4)[4]: uuid.UUID(row.split()[0]) for row in SPEC_KMS_IDS.strip().splitlines()
}

# Spec 8.6 (Microsoft's published GVLKs): SKU ID, GVLK, KMS counted ID (by spec 8.5 name).
SPEC_SKUS = """
2de67392-b7a7-462a-b1ca-108dd189f588 W269N-WFGWX-YVC9B-4J6C9-T83GX Windows 10/11 2015 (Volume)
a80b5abf-76ad-428b-b05d-a47d2dffeebf MH37W-N47XK-V7XM9-C7227-GCQG9 Windows 10/11 2015 (Volume)
82bbc092-bc50-4e16-8e18-b74fc486aec3 NRG8B-VKK3Q-CXVCJ-9G2XF-6Q84J Windows 10/11 2015 (Volume)
3f1afc82-f8ac-4f6c-8005-1d233e606eee 6TP4R-GNPTD-KYYHQ-7B7DP-J447Y Windows 10/11 2015 (Volume)
73111121-5638-40f6-bc11-f1d7b0d64300 NPPR9-FWDCX-D2C8J-H872K-2YT43 Windows 10/11 2015 (Volume)
e272e3e2-732f-4c65-a8f0-484747d0d947 DPH2V-TTNVB-4X9Q3-TJR4H-KHJW4 Windows 10/11 2015 (Volume)
e0c42288-980c-4788-a014-c080d2e1926e NW6C2-QMPVW-D7KKK-3GKT6-VCFB2 Windows 10/11 2015 (Volume)
32d2fab3-e4a8-42c2-923b-4bf4fd13e6ee M7XTQ-FN8P6-TTKYV-9D4CC-J462D Windows 10 2019 (Volume)
2d5a5a60-3040-48bf-beb0-fcd770c20ce0 DCPHK-NFMTC-H88MJ-PFHPY-QJ4BJ Windows 10 2016 (Volume)
7b51a46c-0c04-4e8f-9af4-8496cca90d5e WNMTR-4C88C-JK8YV-HQ7T2-76DF9 Windows 10/11 2015 (Volume)
58e97c99-f377-4ef1-81d5-4ad5522b5fd8 TX9XD-98N7V-6WMQ6-BX7FG-H8Q99 Windows 10/11 (Retail)
e0b2d383-d112-413f-8a80-97f373a5820c YYVX9-NTFWV-6MDM3-9PT4T-4M68B Windows 10/11 China Government
ec868e65-fadf-4759-b23e-93fe37f2cc29 CPWHC-NT2C7-VYW78-DHDB2-PG3GK Windows 10 ServerRdsh
c06b6981-d7fd-4a35-b7b4-054742b7af67 GCRJD-8NW9H-F2CDX-CCM8D-9D6T9 Windows 8.1 (Volume)
81671aaf-79d1-4eb1-b004-8cbbe173afea MHF9N-XY6XB-WVXMC-BTDCT-MKKG7 Windows 8.1 (Volume)
a98bcd6d-5343-4603-8afe-5908e4611112 NG4HW-VH26C-733KW-K6F98-J8CK4 Windows 8 (Volume)
b92e9980-b9d5-4821-9c94-140f632f6312 FJ82H-XT6CR-J8D7P-XQJJ2-GPDD4 Windows 7
ae2ee509-1b34-41c0-acb7-6d4650168915 33PXH-7Y6KF-2VJC9-XBBR8-HVTHH Windows 7
4f3d1606-3fea-4c01-be3c-8d671c401e3b YFKBB-PQJJV-G996G-VWGXY-2V3X8 Windows Vista
c052f164-cdf6-409a-a0cb-853ba0f0f55a D764K-2NDRG-47T6Q-P8T8W-YP6DF Windows Server 2025
7dc26449-db21-4e09-ba37-28f2958506a6 TVRH6-WHNXV-R9WG3-9XRFY-MY832 Windows Server 2025
ef6cfc9f-8c5d-44ac-9aad-de6a2ea0ae03 WX4NM-KYWYW-QJJR4-XV3QB-6VM33 Windows Server 2022
9bd77860-9b31-4b7b-96ad-2564017315bf VDYBN-27WPP-V4HQT-9VMD4-VMK7H Windows Server 2022
34e1ae55-27f8-4950-8877-7a03be5fb181 WMDGN-G9PQG-XVVXX-R3X43-63DFG Windows Server 2019
de32eafd-aaee-4662-9444-c1befb41bde2 N69G4-B89J2-4G8F4-WWYCC-J464C Windows Server 2019
21c56779-b449-4d20-adfc-eece0e1ad74b CB7KF-BWN84-R7R2Y-793K2-8XDDG Windows Server 2016
8c1c5410-9f39-4805-8c9d-63a07706358f WC2BQ-8NRM3-FDDYY-2BFGV-KHKQY Windows Server 2016
00091344-1ea4-4f37-b789-01750ba6988c W3GGN-FT8W3-Y4M27-J84CP-Q3VJ9 Windows Server 2012 R2
b3ca044e-a358-4d68-9883-aaa2941aca99 D2N9P-3P6X9-2R39C-7RTCD-MDVJX Windows Server 2012 R2
d3643d60-0c42-412d-a7d6-52e6635327f6 48HP8-DN98B-MYWDG-T2DCC-8W83P Windows Server 2012
f0f5ec41-0d55-4732-af02-440a44a3cf0f XC9B7-NBPP2-83J2H-RHMBY-92BT4 Windows Server 2012
7482e61b-c589-4b7f-8ecc-46d455ac3b87 74YFP-3QFB3-KQT8W-PMXWJ-7M648 Windows Server 2008 R2 C
68531fb9-5511-4989-97be-d11a0f55633f YC6KT-GKW9T-YTKYR-T4X34-R7VHC Windows Server 2008 R2 B
8d368fc1-9470-4be2-8d66-90e836cbb051 XJ2XN-FW8RK-P4HMP-DKDBV-GCVGB Office LTSC 2024
fbdb3e18-a8ef-4fb3-9183-dffd60bd0984 FXYTK-NJJ8C-GB6DW-3DYQT-6F7TH Office LTSC 2021
85dd8b5f-eaa4-4af3-a628-cce9e77c9a03 NMMKJ-6RK4F-KMJVX-8D9MJ-6MWKP Office 2019
d450596f-894d-49e0-966a-fd39ed4c4c64 XQNVK-8JYDB-WJ9W3-YJ8YR-WFG99 Office 2016
b322da9c-a2e2-4058-9e4e-f59a6970bd69 YC7DK-G2NP3-2QQC3-J6H88-GVGXT Office 2013
6f327760-8c5c-417c-9b61-836a98287e0c VYBBJ-TRJPB-QFQRF-QFT4D-H3GVB Office 2010
"""

# Spec 6.3: host-key group, ePID GroupId, key-id range, release date (None: not given).
SPEC_GROUPS = [
    ("windows-server-2025", 4918, 30_000, 20_029_999, date(2024, 11, 1)),
    ("windows-server-2022", 4573, 0, 20_029_999, date(2021, 8, 18)),
    ("windows-server-2019", 206, 551_000_000, 570_999_999, date(2018, 10, 2)),
    ("windows-server-2016", 206, 491_000_000, 530_999_999, date(2016, 8, 2)),
    ("windows-server-2012-r2", 206, 271_000_000, 310_999_999, date(2013, 10, 17)),
    ("windows-server-2012", 206, 152_000_000, 191_999_999, date(2012, 10, 26)),
    ("windows-server-2008-r2-c", 168, 305_000_000, 312_119_999, date(2009, 10, 22)),
    ("windows-server-2008-r2-b", 168, 312_880_000, 332_999_999, date(2009, 10, 22)),
    ("windows-server-2008-r2-a", 168, 249_000_000, 259_119_999, date(2009, 10, 22)),
    ("windows-server-2008-c", 152, 381_000_000, 392_999_999, date(2006, 11, 30)),
    ("windows-server-2008-b", 152, 339_000_000, 358_999_999, date(2006, 11, 30)),
    ("windows-server-2008-a", 152, 368_000_000, 380_999_999, date(2006, 11, 30)),
    ("windows-10", 206, 390_000_000, 404_999_999, date(2015, 7, 29)),
    ("windows-china-gov", 3858, 15_000_000, 999_999_999, date(2017, 4, 5)),
    ("windows-8.1", 206, 339_000_000, 353_999_999, date(2013, 10, 17)),
    ("windows-8", 206, 199_000_000, 213_999_999, date(2012, 10, 26)),
    ("windows-7", 172, 37_000_000, 49_749_999, date(2009, 10, 22)),
    ("windows-vista", 142, 26_000_000, 35_999_999, date(2006, 11, 30)),
    ("office-ltsc-2024", 206, 666_000_000, 685_999_999, None),
    ("office-ltsc-2021", 206, 571_000_000, 590_999_999, date(2021, 9, 16)),
    ("office-2019", 206, 666_000_000, 685_999_999, date(2018, 9, 24)),
    ("office-2016", 206, 437_000_000, 458_999_999, date(2015, 9, 22)),
    ("office-2013", 206, 234_000_000, 255_999_999, date(2013, 1, 29)),
    ("office-2010", 96, 199_000_000, 217_999_999, date(2010, 7, 15)),
]

# Spec 6.2: server-capable host builds, platform id, release date, NDR64.
SPEC_BUILDS = [
    (6002, 55041, date(2009, 5, 26), False),
    (7601, 55041, date(2011, 2, 22), False),
    (9200, 5426, date(2012, 10, 26), True),
    (9600, 6401, date(2013, 10, 17), True),
    (14393, 3612, date(2016, 8, 2), True),
    (17763, 3612, date(2018, 10, 2), True),
    (20348, 3612, date(2021, 8, 18), True),
    (26100, 3612, date(2024, 11, 1), True),
]

SERVERS = [
    f"Windows Server {v}"
    for v in (
        "2008 A",
        "2008 B",
        "2008 C",
        "2008 R2 A",
        "2008 R2 B",
        "2008 R2 C",
        "2012",
        "2012 R2",
        "2016",
        "2019",
        "2022",
        "2025",
    )
]


def _some(value: T | None) -> T:
    assert value is not None
    return value


def _key(group: HostKeyGroup | None) -> str | None:
    return None if group is None else group.key


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def test_counts(catalog: Catalog) -> None:
    assert len(catalog.applications) == 3
    assert len(catalog.kms_products) == len(KMS) == 33  # spec 8.5 minus vlmcsd-only 5f94a0bb
    assert len(catalog.skus) == 257
    assert len(catalog.host_key_groups) == len(SPEC_GROUPS)


@pytest.mark.parametrize(
    ("app_id", "key", "threshold"),
    [
        (WINDOWS, "windows", 25),
        (OFFICE_2010_APP, "office2010", 5),
        (OFFICE_APP, "office", 5),
    ],
)
def test_applications_spec_84(
    catalog: Catalog, app_id: uuid.UUID, key: str, threshold: int
) -> None:
    app = _some(catalog.application(app_id))
    assert (app.key, app.threshold) == (key, threshold)


@pytest.mark.parametrize("row", SPEC_KMS_IDS.strip().splitlines())
def test_kms_ids_spec_85(catalog: Catalog, row: str) -> None:
    kms_id, threshold, protocol, flags, _name = row.split(maxsplit=4)
    product = _some(catalog.kms_product(uuid.UUID(kms_id)))
    assert product.threshold == int(threshold)
    assert product.default_protocol is ProtocolVersion(int(protocol))
    assert (product.retail, product.preview, product.uncertain) == (
        flags == "r",
        flags == "p",
        flags == "u",
    )
    if product.uncertain:
        assert product.note


@pytest.mark.parametrize("row", SPEC_SKUS.strip().splitlines())
def test_skus_spec_86(catalog: Catalog, row: str) -> None:
    sku_id, gvlk, kms_name = row.split(maxsplit=2)
    sku = catalog.sku_by_gvlk(gvlk)
    assert sku is not None
    assert sku.id == uuid.UUID(sku_id)
    assert sku.kms_id == KMS[kms_name]
    assert catalog.sku(uuid.UUID(sku_id)) == sku


def test_windows_pro_by_gvlk(catalog: Catalog) -> None:
    sku = _some(catalog.sku_by_gvlk(" w269n-wfgwx-yvc9b-4j6c9-t83gx "))
    assert sku.id == uuid.UUID("2de67392-b7a7-462a-b1ca-108dd189f588")
    assert sku.kms_id == uuid.UUID("58e2134f-8e11-4d17-9cb2-91069c151148")
    assert "Pro" in sku.name
    assert catalog.kms_products[sku.kms_id].threshold == 25
    assert catalog.kms_products[KMS["Windows Server 2019"]].threshold == 5
    assert catalog.kms_products[KMS["Office 2019"]].threshold == 5


def test_search_by_gvlk_guid_and_name(catalog: Catalog) -> None:
    [pro] = catalog.search("W269N-WFGWX-YVC9B-4J6C9-T83GX")
    assert pro.name == "Windows 10/11 Pro"
    [ltsc] = catalog.search("FXYTK-NJJ8C-GB6DW-3DYQT-6F7TH")
    assert ltsc.id == uuid.UUID("fbdb3e18-a8ef-4fb3-9183-dffd60bd0984")
    assert catalog.search("{2DE67392-B7A7-462A-B1CA-108DD189F588}") == [pro]
    by_kms = catalog.search("58e2134f-8e11-4d17-9cb2-91069c151148")
    assert pro in by_kms
    assert {s.kms_id for s in by_kms} == {KMS["Windows 10/11 2015 (Volume)"]}
    office_2010 = catalog.search(str(OFFICE_2010_APP))
    assert office_2010
    assert {s.kms_id for s in office_2010} == {KMS["Office 2010"]}
    assert "Office LTSC Professional Plus 2021" in [s.name for s in catalog.search("office 2021")]
    assert catalog.search("   ") == []
    assert catalog.search("no such product") == []


@pytest.mark.parametrize("name", ["Project", "Visio"])
def test_project_and_visio_under_every_office_version(catalog: Catalog, name: str) -> None:
    found = {s.kms_id for s in catalog.search(name)}
    versions = (
        "Office 2010",
        "Office 2013",
        "Office 2016",
        "Office 2019",
        "Office LTSC 2021",
        "Office LTSC 2024",
    )
    assert {KMS[v] for v in versions} <= found


@pytest.mark.parametrize(
    "name",
    [
        "Windows Vista Business",
        "Windows 7 Professional",
        "Windows 8 Professional",
        "Windows 8.1 Professional",
        "Windows 10/11 Pro",
        "Windows 11 SE",
        "Windows Server 2008 Standard",
        "Windows Server 2025 Standard",
        "Office Professional Plus 2010",
        "Office LTSC Professional Plus 2024",
    ],
)
def test_coverage_vista_to_2025(catalog: Catalog, name: str) -> None:
    assert name in [s.name for s in catalog.search(name)]


@pytest.mark.parametrize(("key", "group_id", "low", "high", "released"), SPEC_GROUPS)
def test_group_epid_data_spec_63(
    catalog: Catalog, key: str, group_id: int, low: int, high: int, released: date | None
) -> None:
    group = _some(catalog.host_key_group(key))
    assert (group.epid_group_id, group.min_key_id, group.max_key_id) == (group_id, low, high)
    if released is not None:
        assert group.release_date == released
    else:
        assert group.uncertain


@pytest.mark.parametrize(("build", "platform_id", "released", "ndr64"), SPEC_BUILDS)
def test_host_builds_spec_62(
    catalog: Catalog, build: int, platform_id: int, released: date, ndr64: bool
) -> None:
    entry = catalog.host_builds[build]
    assert (entry.platform_id, entry.release_date, entry.ndr64) == (platform_id, released, ndr64)
    assert entry.server
    assert entry.epid


@pytest.mark.parametrize(
    ("build", "platform_id"),
    [
        (19045, 3612),
        (22631, 3612),
        (9599, 5426),
        (9600, 6401),
        (7601, 55041),
        (99999, 3612),
    ],
)
def test_platform_id_of_the_largest_build_not_above(
    catalog: Catalog, build: int, platform_id: int
) -> None:
    assert catalog.host_build(build).platform_id == platform_id


def test_no_platform_id_below_the_first_build(catalog: Catalog) -> None:
    with pytest.raises(CatalogError, match="older than every known build"):
        catalog.host_build(1)


def _covers(catalog: Catalog, group: str) -> set[str]:
    ids = _some(catalog.host_key_group(group)).kms_ids
    return {name for name, kms_id in KMS.items() if kms_id in ids}


# Microsoft's table (csvlk-scope.md): what each current Windows host key activates.
_CLIENTS_2016 = {
    "Windows 10/11 2015 (Volume)",
    "Windows 10 2016 (Volume)",
    "Windows 8.1 (Volume)",
    "Windows 7",
}


@pytest.mark.parametrize(
    ("group", "servers", "clients"),
    [
        ("windows-server-2025", SERVERS, {*_CLIENTS_2016, "Windows 10 2019 (Volume)"}),
        ("windows-server-2022", SERVERS[:-1], {*_CLIENTS_2016, "Windows 10 2019 (Volume)"}),
        ("windows-server-2019", SERVERS[:-2], {*_CLIENTS_2016, "Windows 10 2019 (Volume)"}),
        ("windows-server-2016", SERVERS[:-3], _CLIENTS_2016),
        ("windows-10", [], {"Windows 10/11 2015 (Volume)", "Windows 8.1 (Volume)", "Windows 7"}),
    ],
)
def test_microsoft_table(
    catalog: Catalog, group: str, servers: list[str], clients: set[str]
) -> None:
    covered = _covers(catalog, group)
    assert covered & set(SERVERS) == set(servers)
    assert clients <= covered
    assert not covered & {"Windows Vista", "Windows 8 (Volume)"}  # absent from the table


def test_scope_examples(catalog: Catalog) -> None:
    covered = _covers(catalog, "windows-server-2019")
    assert {"Windows 10/11 2015 (Volume)", "Windows Server 2016"} <= covered
    assert "Windows Server 2022" not in covered
    assert "Windows 10 2019 (Volume)" not in _covers(catalog, "windows-server-2016")
    assert KMS["Office 2019"] not in _some(catalog.host_key_group("office-2016")).kms_ids
    client_host = _some(catalog.host_key_group("windows-10"))
    assert all(catalog.kms_products[k].threshold == 25 for k in client_host.kms_ids)


@pytest.mark.parametrize(
    ("office", "version"),
    [
        ("office-2010", "Office 2010"),
        ("office-2013", "Office 2013"),
        ("office-2016", "Office 2016"),
        ("office-2019", "Office 2019"),
        ("office-ltsc-2021", "Office LTSC 2021"),
        ("office-ltsc-2024", "Office LTSC 2024"),
    ],
)
def test_one_office_key_per_version(catalog: Catalog, office: str, version: str) -> None:
    assert _some(catalog.host_key_group(office)).kms_ids == {KMS[version]}


def test_vista_and_windows_8_only_by_older_keys(catalog: Catalog) -> None:
    vista = {g.key for g in catalog.groups_covering(KMS["Windows Vista"])}
    assert {"windows-vista", "windows-7"} <= vista  # XML: the Windows 7 key lists Vista
    win8 = {g.key for g in catalog.groups_covering(KMS["Windows 8 (Volume)"])}
    assert "windows-8" in win8
    for modern in (
        "windows-server-2016",
        "windows-server-2019",
        "windows-server-2022",
        "windows-server-2025",
        "windows-10",
    ):
        assert modern not in vista | win8


def test_retail_preview_and_china_gov(catalog: Catalog) -> None:
    for name in (
        "Windows 10/11 (Retail)",
        "Windows 8 (Retail)",
        "Windows 8.1 (Retail)",
        "Windows Server Preview",
        "Office 2013 (Pre-release)",
    ):
        assert catalog.groups_covering(KMS[name]) == ()
    china = catalog.groups_covering(KMS["Windows 10/11 China Government"])
    assert [g.key for g in china] == ["windows-china-gov"]


def test_groups_covering_is_newest_first(catalog: Catalog) -> None:
    groups = catalog.groups_covering(KMS["Windows 7"])
    assert groups[0].key == "windows-server-2025"
    dates = [g.release_date for g in groups]
    assert dates == sorted(dates, reverse=True)
    assert catalog.groups_covering(uuid.uuid4()) == ()


def test_resolve_scope(catalog: Catalog) -> None:
    assert catalog.resolve_scope([ALL_GROUPS]) == {g.key for g in catalog.host_key_groups}
    assert catalog.resolve_scope(["Windows-Server-2019", " office-2016 "]) == {
        "windows-server-2019",
        "office-2016",
    }
    assert catalog.resolve_scope("windows-10") == {"windows-10"}
    assert catalog.resolve_scope([]) == frozenset()
    with pytest.raises(ValueError, match="windows-server-2030"):
        catalog.resolve_scope(["windows-server-2019", "windows-server-2030"])


def test_group_for(catalog: Catalog) -> None:
    everything = catalog.resolve_scope(["all"])
    pro = KMS["Windows 10/11 2015 (Volume)"]
    assert _key(catalog.group_for(pro, WINDOWS, everything)) == "windows-server-2025"
    older = catalog.resolve_scope(["windows-server-2016", "windows-server-2019"])
    assert _key(catalog.group_for(pro, WINDOWS, older)) == "windows-server-2019"
    assert catalog.group_for(pro, WINDOWS, catalog.resolve_scope(["office-2016"])) is None
    assert catalog.group_for(KMS["Windows 10/11 (Retail)"], WINDOWS, everything) is None


def test_group_for_unknown_kms_id_uses_the_application_default(catalog: Catalog) -> None:
    unknown = uuid.UUID("10a7e9fb-ca8c-5352-88f5-91b8dbe13b22")  # referenced, never defined
    everything = catalog.resolve_scope(["all"])
    assert _key(catalog.group_for(unknown, WINDOWS, everything)) == "windows-server-2025"
    assert (
        _key(catalog.group_for(unknown, WINDOWS, {"windows-server-2019"})) == "windows-server-2019"
    )
    assert catalog.group_for(unknown, WINDOWS, {"windows-china-gov"}) is None
    assert _key(catalog.group_for(unknown, OFFICE_APP, everything)) == "office-ltsc-2024"
    assert (
        _key(catalog.group_for(unknown, OFFICE_APP, {"office-2016", "office-2019"}))
        == "office-2019"
    )
    assert _key(catalog.group_for(unknown, OFFICE_2010_APP, everything)) == "office-2010"
    assert catalog.group_for(unknown, uuid.uuid4(), everything) is None


def test_fallback_group_is_the_windows_slot(catalog: Catalog) -> None:
    # vlmcsd answers what it cannot attribute with its "Windows" CSVLK (spec 6.5).
    assert catalog.fallback_group(catalog.resolve_scope(["all"])).key == "windows-server-2025"
    assert catalog.fallback_group({"windows-7", "windows-10"}).key == "windows-10"
    # No Windows default in scope: the newest group in scope.
    assert catalog.fallback_group({"windows-china-gov", "office-2016"}).key == "windows-china-gov"
    with pytest.raises(CatalogError, match="empty"):
        catalog.fallback_group(frozenset())


def test_application_and_group_lookups(catalog: Catalog) -> None:
    assert catalog.application_id("office2010") == OFFICE_2010_APP
    with pytest.raises(CatalogError):
        catalog.application_id("visual-studio")
    assert catalog.host_key_group("windows-server-2030") is None
    assert catalog.application(uuid.uuid4()) is None
    assert catalog.kms_product(uuid.uuid4()) is None
    assert catalog.sku(uuid.uuid4()) is None
    assert catalog.sku_by_gvlk("AAAAA-BBBBB-CCCCC-DDDDD-EEEEE") is None
    dates = [g.release_date for g in catalog.host_key_groups]
    assert dates == sorted(dates, reverse=True)


def test_overlay_adds_a_kms_id_and_overrides_a_name(tmp_path: Path) -> None:
    new_kms = "00000000-0000-4000-8000-000000000001"
    overlay = tmp_path / "overlay.json"
    overlay.write_text(
        json.dumps(
            {
                "kms_ids": [
                    {
                        "id": new_kms,
                        "name": "Windows Server vNext",
                        "application": "windows",
                        "threshold": 5,
                        "host_key_groups": ["windows-server-2025"],
                    },
                    {
                        "id": "{8449B1FB-F0EA-497A-99AB-66CA96E9A0F5}",
                        "name": "Server 2019 (renamed)",
                    },
                ],
                "skus": [
                    {
                        "id": "00000000-0000-4000-8000-000000000002",
                        "name": "vNext Datacenter",
                        "kms_id": new_kms,
                        "gvlk": "AAAAA-BBBBB-CCCCC-DDDDD-EEEEE",
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    catalog = load_catalog(overlay)
    added = _some(catalog.kms_product(uuid.UUID(new_kms)))
    assert (added.threshold, added.default_protocol, added.retail) == (5, ProtocolVersion.V6, False)
    assert uuid.UUID(new_kms) in _some(catalog.host_key_group("windows-server-2025")).kms_ids
    assert _some(catalog.sku_by_gvlk("AAAAA-BBBBB-CCCCC-DDDDD-EEEEE")).kms_id == uuid.UUID(new_kms)
    renamed = _some(catalog.kms_product(KMS["Windows Server 2019"]))
    assert renamed.name == "Server 2019 (renamed)"
    assert renamed.threshold == 5  # the other fields are kept
    assert len(catalog.kms_products) == 34


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {
                "skus": [
                    {
                        "id": "00000000-0000-4000-8000-000000000002",
                        "name": "x",
                        "kms_id": "00000000-0000-4000-8000-000000000009",
                    }
                ]
            },
            "unknown KMS ID",
        ),
        (
            {
                "kms_ids": [
                    {
                        "id": "00000000-0000-4000-8000-000000000001",
                        "name": "x",
                        "application": "windows",
                    }
                ]
            },
            "missing fields",
        ),
        (
            {"kms_ids": [{"id": "8449b1fb-f0ea-497a-99ab-66ca96e9a0f5", "colour": "red"}]},
            "unknown fields",
        ),
        ({"host_key_groups": [{"key": "office-2016", "kms_ids": [str(WINDOWS)]}]}, "dangling"),
        (
            {
                "host_key_groups": [
                    {"key": "office-2016", "kms_ids": ["58e2134f-8e11-4d17-9cb2-91069c151148"]}
                ]
            },
            "different applications",
        ),
        ({"kms_ids": [{"id": "not-a-guid"}]}, "bad id"),
        ({"products": []}, "unknown sections"),
    ],
)
def test_bad_overlays_are_refused(tmp_path: Path, document: object, message: str) -> None:
    overlay = tmp_path / "overlay.json"
    overlay.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(CatalogError, match=message):
        load_catalog(overlay)


def test_unreadable_overlay(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(CatalogError, match="not valid JSON"):
        load_catalog(broken)


def test_catalog_json_is_consistent() -> None:
    document = json.loads(CATALOG_JSON.read_text(encoding="utf-8"))
    assert document["source"].startswith("Generated by scripts/build_catalog.py")
    assert document["notes"]
    apps = {a["key"] for a in document["applications"]}
    kms = {k["id"]: k for k in document["kms_ids"]}
    groups = {g["key"]: g for g in document["host_key_groups"]}
    assert all(k["application"] in apps for k in kms.values())
    assert all(s["kms_id"] in kms for s in document["skus"])
    for key, group in groups.items():
        assert group["application"] in apps
        for kms_id in group["kms_ids"]:
            assert key in kms[kms_id]["host_key_groups"]  # both directions agree
    for kms_id, product in kms.items():
        assert all(kms_id in groups[g]["kms_ids"] for g in product["host_key_groups"])
    for app in document["applications"]:
        assert all(groups[g]["application"] == app["key"] for g in app["default_groups"])
    assert len({s["gvlk"] for s in document["skus"]}) == len(document["skus"])


@pytest.mark.skipif(
    not SOURCE_XML.is_file(),
    reason=f"source {SOURCE_XML} not present (a fresh clone has no ../shared)",
)
def test_build_script_regenerates_the_committed_catalog(tmp_path: Path) -> None:
    output = tmp_path / "catalog.json"
    subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "build_catalog.py"),
            str(SOURCE_XML),
            "--output",
            str(output),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert output.read_bytes() == CATALOG_JSON.read_bytes()
