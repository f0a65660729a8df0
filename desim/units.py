"""Quantities with units in configs: times (``25ns``), sizes (``4KiB``) and rates (``500/s``).

Parsing is done by pint; desim works internally in integer nanoseconds, bytes and events per
nanosecond. A bare number is taken in the base unit (ns, bytes, per second for rates).
"""

from __future__ import annotations

from functools import lru_cache

import pint

_UREG = pint.UnitRegistry()
NS_PER_S = 1_000_000_000


class UnitError(ValueError):
    """A quantity could not be read in the unit the field needs."""


def _quantity(text: str) -> pint.Quantity:
    try:
        return _UREG.Quantity(text.strip())
    except Exception as exc:  # pint raises several unrelated types for bad input
        raise UnitError(f"cannot read {text!r} as a quantity") from exc


@lru_cache(maxsize=1024)
def parse_time_ns(value: str | int | float) -> int:
    """A duration in integer nanoseconds: ``25ns``, ``2us``, ``3ms``, ``1.5s``; a number is ns."""
    if isinstance(value, bool):
        raise UnitError("a duration must be a number or a string like '3ms'")
    if isinstance(value, int | float):
        return round(value)
    q = _quantity(value)
    if q.unitless:
        return round(q.magnitude)
    try:
        return round(q.to("ns").magnitude)
    except pint.DimensionalityError as exc:
        raise UnitError(f"{value!r} is not a duration (use ns, us, ms or s)") from exc


@lru_cache(maxsize=1024)
def parse_size_bytes(value: str | int) -> int:
    """A size in bytes: ``4KiB``, ``64KiB``, ``2KiB``; a bare number is bytes."""
    if isinstance(value, bool):
        raise UnitError("a size must be a number or a string like '4KiB'")
    if isinstance(value, int | float):
        return round(value)
    q = _quantity(value)
    try:
        mag = q.magnitude if q.unitless else q.to("B").magnitude
    except pint.DimensionalityError as exc:
        raise UnitError(f"{value!r} is not a size (use B, KiB, MiB)") from exc
    return round(mag)


@lru_cache(maxsize=1024)
def parse_rate_per_ns(value: str | int | float) -> float:
    """A rate in events per nanosecond: ``500/s``, ``2/ms``; a bare number is per second."""
    if isinstance(value, bool):
        raise UnitError("a rate must be a number or a string like '500/s'")
    if isinstance(value, int | float):
        return float(value) / NS_PER_S
    q = _quantity(value)
    if q.unitless:
        return float(q.magnitude) / NS_PER_S
    try:
        return float(q.to("1/ns").magnitude)
    except pint.DimensionalityError as exc:
        raise UnitError(f"{value!r} is not a rate (use e.g. 500/s or 2/ms)") from exc


def format_ns(ns: float) -> str:
    """A short human reading of a duration in ns (``1.23 ms``); ``-`` when there is none."""
    if ns != ns:  # NaN: nothing was measured
        return "-"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if abs(ns) >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def format_bytes(n: float) -> str:
    """A short human reading of a size in bytes (``1.5 MiB``)."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"
