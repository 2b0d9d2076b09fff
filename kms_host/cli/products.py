"""``kms-host products [QUERY]``: search the catalog, and say which held group serves each SKU."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from kms_host.cli.views import Failure, add_common, command, format_table
from kms_host.config import Config
from kms_host.errors import EXIT_OK
from kms_host.host.app import check_catalog_settings
from kms_host.policy.catalog import Catalog, Sku
from kms_host.policy.catalog_file import load_catalog

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``products``."""
    products = commands.add_parser("products", help="search the product catalog")
    products.add_argument("query", nargs="?", help="product name, GVLK or GUID (default: all)")
    add_common(products)
    products.set_defaults(handler=command(_products))


async def _products(args: argparse.Namespace, config: Config) -> int:
    catalog = load_catalog()
    scope = check_catalog_settings(config, catalog)
    if args.query:
        skus = catalog.search(args.query)
    else:
        skus = sorted(catalog.skus.values(), key=lambda s: (s.name.casefold(), str(s.id)))
    if not skus:
        raise Failure(f"no product matches {args.query!r}")
    rows = [_product(catalog, sku, scope) for sku in skus]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    headers = ("PRODUCT", "GVLK", "KMS PRODUCT", "APP", "THRESHOLD", "PROTO", "SERVED BY")
    table = [
        (
            row["name"],
            row["gvlk"] or "-",
            row["kms_product"],
            row["application"],
            str(row["threshold"]),
            row["default_protocol"],
            row["served_by"] or "not served",
        )
        for row in rows
    ]
    print(format_table(headers, table, decorated=sys.stdout.isatty()))
    return EXIT_OK


def _product(catalog: Catalog, sku: Sku, scope: frozenset[str]) -> dict[str, Any]:
    product = catalog.kms_products[sku.kms_id]
    app_id = catalog.application_id(product.application)
    group = catalog.group_for(sku.kms_id, app_id, scope)
    return {
        "name": sku.name,
        "sku_id": str(sku.id),
        "gvlk": sku.gvlk,
        "kms_product": product.name,
        "kms_id": str(sku.kms_id),
        "application": product.application,
        "threshold": product.threshold,
        "default_protocol": f"{product.default_protocol.value}.0",
        "served": group is not None,
        "served_by": group.key if group else None,
    }
