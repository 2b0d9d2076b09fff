"""The host's decision for one request: the same IDs judged under different tables.

:func:`kms_host.policy.activation.assess` remembers what the catalog says about a request's
application, KMS and SKU IDs. These tests ask about one request under two host-key
scopes and two catalogs, in the order that would expose an answer remembered for the wrong
one. The request is the load generator's Windows 10/11 Pro one (spec 8.4-8.6); the verdicts
are spec 7.4's.
"""

from __future__ import annotations

import uuid
from types import MappingProxyType

from kms_host.bench.null_server import make_request
from kms_host.config import PolicyConfig
from kms_host.policy.activation import HRESULT_KMS_ID_MISMATCH, Refusal, assess
from kms_host.policy.catalog import Catalog
from kms_host.policy.catalog_file import load_catalog
from protocol.kms import ProtocolVersion

WINDOWS = uuid.UUID("55c92734-d682-4d71-983e-d6ec3f16059f")
NOW = 133_485_408_000_000_000  # a FILETIME; the request is sent at the same instant
REQUEST = make_request(ProtocolVersion.V6, uuid.UUID(int=0x1234), NOW)  # Windows 10/11 Pro


def _judge(catalog: Catalog, scope: frozenset[str]) -> tuple[Refusal | None, tuple[str, ...]]:
    found = assess(REQUEST, catalog=catalog, scope=scope, policy=PolicyConfig(), now_filetime=NOW)
    return found.refusal, found.notes


def test_a_request_is_judged_by_the_scope_it_is_given_each_time() -> None:
    catalog = load_catalog()
    everything = catalog.resolve_scope(["all"])
    office_only = catalog.resolve_scope(["office-2019"])

    assert _judge(catalog, everything) == (None, ())
    assert _judge(catalog, office_only) == (
        Refusal(HRESULT_KMS_ID_MISMATCH, "product_not_in_scope"),
        (),
    )
    assert _judge(catalog, everything) == (None, ())


def test_a_request_is_judged_by_the_catalog_it_is_given_each_time() -> None:
    catalog = load_catalog()
    empty = Catalog(
        applications=MappingProxyType({}),
        kms_products=MappingProxyType({}),
        skus=MappingProxyType({}),
        host_key_groups=(),
        host_builds=MappingProxyType({}),
    )
    scope = catalog.resolve_scope(["all"])

    assert _judge(catalog, scope) == (None, ())
    unknown = assess(REQUEST, catalog=empty, scope=scope, policy=PolicyConfig(), now_filetime=NOW)
    assert unknown.app == str(WINDOWS)
    assert unknown.notes == ("unknown_application", "unknown_kms_id", "unknown_sku")
    assert unknown.product is None
    assert unknown.group is None
    assert unknown.refusal is None
