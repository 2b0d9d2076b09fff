"""The product catalog: applications, KMS counted IDs, SKUs, host-key groups and host builds.

What the host knows and how it looks things up; :mod:`kms_host.policy.catalog_file` reads it
from ``kms_host/data/catalog.json`` and an operator's overlay.

A host-key group is what a real KMS host's CSVLK is: it fixes the ePID's group id and key range
(spec 6.3) and the KMS counted IDs the host activates. ``[host] scope`` names groups; a request
for a KMS ID outside the scope is what a genuine host refuses with 0xC004F042 (spec 7.4).
"""

from __future__ import annotations

import bisect
import uuid
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import date
from types import MappingProxyType

from protocol.kms import ProtocolVersion

__all__ = [
    "ALL_GROUPS",
    "Application",
    "Catalog",
    "CatalogError",
    "HostBuild",
    "HostKeyGroup",
    "KmsProduct",
    "Sku",
]

ALL_GROUPS = "all"
"""The scope name that stands for every host-key group (a lab host holding every key)."""


class CatalogError(ValueError):
    """The catalog, an overlay or a scope name is invalid; the message names the entry."""


@dataclass(frozen=True, slots=True)
class Application:
    """An ApplicationID (spec 8.4): one client-counting pool on the host.

    ``threshold`` is the family's default activation threshold; ``default_groups`` are the
    groups whose ePID answers an unknown KMS ID of this application, preferred first (spec 6.6).
    """

    id: uuid.UUID
    key: str
    name: str
    threshold: int
    default_groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class KmsProduct:
    """A KMS counted ID (spec 8.5): the product group a client asks the host to activate.

    ``application`` is an :attr:`Application.key`. ``host_key_groups`` lists the groups that
    cover it, newest first; retail and preview IDs are covered by none. ``uncertain`` marks IDs
    that real clients may not send (placeholders in the source database).
    """

    id: uuid.UUID
    name: str
    application: str
    threshold: int
    default_protocol: ProtocolVersion = ProtocolVersion.V6
    retail: bool = False
    preview: bool = False
    uncertain: bool = False
    note: str | None = None
    host_key_groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Sku:
    """An SKU (activation) ID and its public GVLK (spec 8.6); hosts only log it."""

    id: uuid.UUID
    name: str
    kms_id: uuid.UUID
    gvlk: str | None = None
    gvlk_generated: bool = False


@dataclass(frozen=True, slots=True)
class HostKeyGroup:
    """A host key (CSVLK group, spec 6.3): ePID data and the KMS counted IDs it activates.

    ``min_host_build`` is the oldest server build the key installs on (spec 6.2), if known.
    """

    key: str
    name: str
    application: str
    epid_group_id: int
    min_key_id: int
    max_key_id: int
    release_date: date
    min_host_build: int | None = None
    kms_ids: frozenset[uuid.UUID] = frozenset()
    uncertain: bool = False
    note: str | None = None


@dataclass(frozen=True, slots=True)
class HostBuild:
    """A Windows build a host may claim (spec 6.2): its ePID platform id and RPC flavour."""

    build: int
    name: str
    platform_id: int
    release_date: date
    server: bool = False
    ndr64: bool = False
    epid: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class Catalog:
    """The loaded catalog: read-only mappings by ID, and the host-key groups newest first."""

    applications: Mapping[uuid.UUID, Application]
    kms_products: Mapping[uuid.UUID, KmsProduct]
    skus: Mapping[uuid.UUID, Sku]
    host_key_groups: tuple[HostKeyGroup, ...]
    host_builds: Mapping[int, HostBuild]
    _groups: Mapping[str, HostKeyGroup] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        groups = MappingProxyType({g.key: g for g in self.host_key_groups})
        object.__setattr__(self, "_groups", groups)

    def application(self, application_id: uuid.UUID) -> Application | None:
        """The application with this ID, if known."""
        return self.applications.get(application_id)

    def application_id(self, key: str) -> uuid.UUID:
        """The ID of the application with this key (as in :attr:`KmsProduct.application`)."""
        for app in self.applications.values():
            if app.key == key:
                return app.id
        raise CatalogError(f"unknown application {key!r}")

    def kms_product(self, kms_id: uuid.UUID) -> KmsProduct | None:
        """The KMS counted ID, if known."""
        return self.kms_products.get(kms_id)

    def sku(self, sku_id: uuid.UUID) -> Sku | None:
        """The SKU with this activation ID, if known."""
        return self.skus.get(sku_id)

    def sku_by_gvlk(self, gvlk: str) -> Sku | None:
        """The SKU a GVLK installs (case-insensitive, surrounding blanks ignored)."""
        wanted = gvlk.strip().upper()
        return next((s for s in self.skus.values() if s.gvlk == wanted), None)

    def host_key_group(self, key: str) -> HostKeyGroup | None:
        """The host-key group with this key, if known."""
        return self._groups.get(key)

    def search(self, query: str) -> list[Sku]:
        """SKUs matching ``query``, sorted by name.

        A GUID matches the SKU, KMS counted or application ID; a GVLK matches its SKU; any
        other text matches SKU or KMS product names as a case-insensitive substring.
        """
        text = query.strip()
        if not text:
            return []
        try:
            guid: uuid.UUID | None = uuid.UUID(text)
        except ValueError:
            guid = None
        app = self.applications.get(guid) if guid else None
        needle, gvlk = text.casefold(), text.upper()

        def matches(sku: Sku) -> bool:
            kms = self.kms_products[sku.kms_id]
            if guid is not None:
                return guid in (sku.id, sku.kms_id) or (
                    app is not None and kms.application == app.key
                )
            return (
                sku.gvlk == gvlk or needle in sku.name.casefold() or needle in kms.name.casefold()
            )

        found = [sku for sku in self.skus.values() if matches(sku)]
        return sorted(found, key=lambda s: (s.name.casefold(), str(s.id)))

    def groups_covering(self, kms_id: uuid.UUID) -> tuple[HostKeyGroup, ...]:
        """Groups whose host key activates ``kms_id``, newest first (empty if none/unknown)."""
        kms = self.kms_products.get(kms_id)
        return tuple(self._groups[k] for k in kms.host_key_groups) if kms else ()

    def resolve_scope(self, names: Sequence[str]) -> frozenset[str]:
        """Group keys named by a ``[host] scope`` list; ``"all"`` means every group.

        Names are case-insensitive; a bare string counts as one name. An unknown name raises
        :class:`CatalogError` (a ``ValueError``) naming it and the valid names.
        """
        chosen: set[str] = set()
        for name in (names,) if isinstance(names, str) else names:
            key = name.strip().lower()
            if key == ALL_GROUPS:
                chosen.update(self._groups)
            elif key in self._groups:
                chosen.add(key)
            else:
                known = ", ".join([ALL_GROUPS, *sorted(self._groups)])
                raise CatalogError(f"unknown host-key group {name!r} in scope (known: {known})")
        return frozenset(chosen)

    def default_group(self, application_id: uuid.UUID, scope: Set[str]) -> HostKeyGroup | None:
        """The in-scope group that answers unknown KMS IDs of this application (spec 6.6)."""
        app = self.applications.get(application_id)
        keys = app.default_groups if app else ()
        return next((self._groups[k] for k in keys if k in scope), None)

    def group_for(
        self, kms_id: uuid.UUID, application_id: uuid.UUID, scope: Set[str]
    ) -> HostKeyGroup | None:
        """The group whose ePID answers a request, or None if no in-scope key activates it.

        A known KMS ID gets the newest in-scope group covering it (retail and preview ones get
        None: a genuine host refuses them). An unknown KMS ID gets :meth:`default_group`.
        """
        if kms_id not in self.kms_products:
            return self.default_group(application_id, scope)
        return next((g for g in self.groups_covering(kms_id) if g.key in scope), None)

    def fallback_group(self, scope: Set[str]) -> HostKeyGroup:
        """The group whose ePID answers a request that :meth:`group_for` leaves without one.

        vlmcsd answers such requests with its "Windows" CSVLK (spec 6.5): the Windows
        application's first in-scope default group, else the newest group in scope. Raises
        :class:`CatalogError` if the scope is empty.
        """
        windows = [a.id for a in self.applications.values() if a.key == "windows"]
        group = self.default_group(windows[0], scope) if windows else None
        group = group or next((g for g in self.host_key_groups if g.key in scope), None)
        if group is None:
            raise CatalogError("the host-key scope is empty")
        return group

    def host_build(self, build: int) -> HostBuild:
        """The entry for ``build``: the largest known build <= it (vlmcsd's rule, spec 6.2).

        Raises :class:`CatalogError` if ``build`` is older than every known build.
        """
        builds = list(self.host_builds)
        index = bisect.bisect_right(builds, build) - 1
        if index < 0:
            raise CatalogError(f"host build {build} is older than every known build")
        return self.host_builds[builds[index]]
