"""Converters from a raw config value (TOML, environment, flag) to a typed setting.

One set for every section parser (``config``, ``[dns]``, ``[[scenario]]``), so that the
same kind of key is checked, and explained, the same way everywhere. Each raises
``ValueError`` saying what it expected; the caller adds the dotted key (``ConfigError``).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["boolean", "integer", "number"]


def boolean(value: object) -> bool:
    """A TOML boolean; 1/0 and "true" are refused, since they hide typos in other keys."""
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def integer(low: int, high: int) -> Callable[[object], int]:
    """An integer within ``low..high`` (a boolean is not an integer here)."""

    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer from {low} to {high}, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"must be from {low} to {high}, got {value}")
        return value

    return convert


def number(low: float, high: float) -> Callable[[object], float]:
    """An integer or float within ``low..high``, as a float (NaN is refused)."""

    def convert(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number from {low:g} to {high:g}, got {value!r}")
        if not low <= value <= high:  # also rejects nan
            raise ValueError(f"must be from {low:g} to {high:g}, got {value!r}")
        return float(value)

    return convert
