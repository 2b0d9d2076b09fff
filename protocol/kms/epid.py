"""The KMS host's ePID and HwId (spec section 6): render, parse, generate. Pure.

An ePID names the host's OS (platform id and build), its host key (CSVLK group id and key id),
its locale and the day the host key was activated, in the layout of spec 6.1::

    PPPPP-GGGGG-KKK-KKKKKK-03-L-B.0000-DDDYYYY

Clients treat it as informational, but a badly formed one marks an emulator, so every field is
checked both ways. Nothing here reads a clock or a random source: callers pass ``today`` and an
``rng(n) -> n bytes`` (architecture 4.1). Bad input raises :class:`EpidError`, for the HwId too
(spec 6.7 is part of the same section).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

from protocol.errors import EpidError

__all__ = [
    "HWID_LENGTH",
    "LCIDS",
    "MAX_EPID_LENGTH",
    "Epid",
    "format_hwid",
    "generate_epid",
    "generate_hwid",
    "parse_epid",
    "parse_hwid",
]

MAX_EPID_LENGTH = 63
"""Longest ePID kept, in characters (spec 6.1: vlmcsd.ini(5) allows "up to 63 bytes")."""

HWID_LENGTH = 8
"""Bytes of the V6 response's HwId (spec 6.7)."""

# fmt: off
LCIDS: frozenset[int] = frozenset({
    1078, 1052, 1025, 2049, 3073, 4097, 5121, 6145, 7169, 8193, 9217, 10241, 11265, 12289, 13313,
    14337, 15361, 16385, 1067, 1068, 2092, 1069, 1059, 1093, 5146, 1026, 1027, 1028, 2052, 3076,
    4100, 5124, 1050, 4122, 1029, 1030, 1125, 1043, 2067, 1033, 2057, 3081, 4105, 5129, 6153, 7177,
    8201, 9225, 10249, 11273, 12297, 13321, 1061, 1080, 1065, 1035, 1036, 2060, 3084, 4108, 5132,
    6156, 1079, 1110, 1031, 2055, 3079, 4103, 5127, 1032, 1095, 1037, 1081, 1038, 1039, 1057, 1040,
    2064, 1041, 1099, 1087, 1111, 1042, 1088, 1062, 1063, 1071, 1086, 2110, 1100, 1082, 1153, 1102,
    1104, 1044, 2068, 1045, 1046, 2070, 1094, 1131, 2155, 3179, 1048, 1049, 9275, 4155, 5179, 3131,
    1083, 2107, 8251, 6203, 7227, 1103, 2074, 6170, 3098, 7194, 1051, 1060, 1034, 2058, 3082, 4106,
    5130, 6154, 7178, 8202, 9226, 10250, 11274, 12298, 13322, 14346, 15370, 16394, 17418, 18442,
    19466, 20490, 1089, 1053, 2077, 1114, 1097, 1092, 1098, 1054, 1074, 1058, 1056, 1091, 2115,
    1066, 1106, 1076, 1077,
})
# fmt: on
"""Windows locale ids a host may report (spec 6.4, vlmcsd's list); 1033 is en-US."""

_VOLUME_CHANNEL = "03"  # license channel field: volume (GVLK/CSVLK), spec 6.1
_KEY_ID_SPLIT = 1_000_000  # the key id is printed as KKK-KKKKKK
_MAX_FIVE_DIGITS = 99_999
_MAX_WORD = 0xFFFF  # LCIDs and build numbers are 16-bit values in Windows
_MIN_YEAR = 1000  # YYYY is four digits
_EPID = re.compile(
    r"(\d{5})-(\d{5})-(\d{3})-(\d{6})-(\d{2})-([1-9]\d*)-([1-9]\d*)\.0000-(\d{3})(\d{4})",
    re.ASCII,
)
_HWID = re.compile(r"[0-9A-Fa-f]{16}", re.ASCII)


@dataclass(frozen=True, slots=True)
class Epid:
    """An ePID's fields (spec 6.1); ``str()`` renders the wire text.

    The constructor checks that every field fits its printed width, so any ``Epid`` renders to
    a string that :func:`parse_epid` reads back to an equal value.
    """

    platform_id: int
    group_id: int
    key_id: int
    lcid: int
    build: int
    activation_date: date

    def __post_init__(self) -> None:
        limits = {
            "platform_id": (0, _MAX_FIVE_DIGITS, self.platform_id),
            "group_id": (0, _MAX_FIVE_DIGITS, self.group_id),
            "key_id": (0, _KEY_ID_SPLIT * 1000 - 1, self.key_id),
            "lcid": (1, _MAX_WORD, self.lcid),
            "build": (1, _MAX_WORD, self.build),
            "year": (_MIN_YEAR, 9999, self.activation_date.year),
        }
        for name, (low, high, value) in limits.items():
            if not low <= value <= high:
                raise EpidError(f"ePID {name} {value} is outside {low}..{high}")

    def __str__(self) -> str:
        day = self.activation_date.timetuple().tm_yday  # 1-based, as vlmcsd prints it
        high, low = divmod(self.key_id, _KEY_ID_SPLIT)
        return (
            f"{self.platform_id:05d}-{self.group_id:05d}-{high:03d}-{low:06d}-{_VOLUME_CHANNEL}-"
            f"{self.lcid}-{self.build}.0000-{day:03d}{self.activation_date.year:04d}"
        )


def parse_epid(text: str) -> Epid:
    """Read an ePID in the layout of spec 6.1; raise :class:`EpidError` if any field is off.

    Rejected: more than 63 characters, any deviation from the layout (including non-ASCII
    digits and zero-padded LCID or build), a license channel other than ``03``, a day of the
    year outside 1..365 (366 in leap years) and fields out of range for :class:`Epid`.
    """
    if len(text) > MAX_EPID_LENGTH:
        raise EpidError(f"ePID is {len(text)} characters long, more than {MAX_EPID_LENGTH}")
    match = _EPID.fullmatch(text)
    if match is None:
        raise EpidError(
            f"ePID {text!r} does not have the layout PPPPP-GGGGG-KKK-KKKKKK-03-L-B.0000-DDDYYYY"
        )
    platform, group, key_high, key_low, channel, lcid, build, day, year = match.groups()
    if channel != _VOLUME_CHANNEL:
        raise EpidError(f"ePID license channel {channel!r} is not {_VOLUME_CHANNEL!r} (volume)")
    if int(year) < _MIN_YEAR:
        raise EpidError(f"ePID year {year} is before {_MIN_YEAR}")
    days_in_year = 366 if calendar.isleap(int(year)) else 365
    if not 1 <= int(day) <= days_in_year:
        raise EpidError(f"ePID day of year {day} is not in 001..{days_in_year} of {year}")
    return Epid(
        platform_id=int(platform),
        group_id=int(group),
        key_id=int(key_high) * _KEY_ID_SPLIT + int(key_low),
        lcid=int(lcid),
        build=int(build),
        activation_date=date(int(year), 1, 1) + timedelta(days=int(day) - 1),
    )


def generate_epid(
    *,
    platform_id: int,
    group_id: int,
    min_key_id: int,
    max_key_id: int,
    lcid: int,
    build: int,
    earliest: date,
    today: date,
    rng: Callable[[int], bytes],
) -> Epid:
    """A random, realistic ePID for one host key (spec 6.5).

    The key id is uniform in [min_key_id, max_key_id] of the host key's group (spec 6.3) and
    the activation date uniform in [earliest, today], where the caller passes as ``earliest``
    the later of the key's and the host build's release dates. Draws 8 bytes from ``rng`` for
    each, in that order, so a seeded ``rng`` gives a reproducible ePID.
    """
    if min_key_id > max_key_id:
        raise EpidError(f"key-id range {min_key_id}..{max_key_id} is empty")
    if earliest > today:
        raise EpidError(f"earliest activation date {earliest} is after today ({today})")
    key_id = min_key_id + _uniform(rng, max_key_id - min_key_id + 1)
    activated = earliest + timedelta(days=_uniform(rng, (today - earliest).days + 1))
    return Epid(platform_id, group_id, key_id, lcid, build, activated)


def _uniform(rng: Callable[[int], bytes], count: int) -> int:
    """A number in [0, count): 64 random bits modulo ``count`` (bias < count / 2**64)."""
    return int.from_bytes(rng(8), "big") % count


def generate_hwid(rng: Callable[[int], bytes]) -> bytes:
    """A random 8-byte HwId (spec 6.7); the caller keeps it for the host's lifetime."""
    hwid = rng(HWID_LENGTH)
    if len(hwid) != HWID_LENGTH:
        raise EpidError(f"rng returned {len(hwid)} bytes for an {HWID_LENGTH}-byte HwId")
    return hwid


def parse_hwid(text: str) -> bytes:
    """Read a HwId written as 16 hex digits in byte order, e.g. ``3A1C049600B60076`` (6.7)."""
    if not _HWID.fullmatch(text):
        raise EpidError(f"HwId {text!r} is not 16 hexadecimal digits")
    return bytes.fromhex(text)


def format_hwid(hwid: bytes) -> str:
    """Write a HwId as 16 upper-case hex digits in byte order (as vlmcsd's client prints it)."""
    if len(hwid) != HWID_LENGTH:
        raise EpidError(f"HwId has {len(hwid)} bytes, not {HWID_LENGTH}")
    return hwid.hex().upper()
