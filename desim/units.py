"""Quantities with units in configs: times (``25ns``), sizes (``4KiB``) and rates (``500/s``).

desim works internally in integer nanoseconds, bytes and events per nanosecond. A bare number
is taken in the base unit (ns, bytes, per second for rates). In what a user writes (a config
file, ``--set``, an experiment's points: inside ``units_required()``) a time must carry its unit,
since a bare ``500`` read as 500 ns where 500 ms was meant runs a different experiment without a
word; zero needs none. desim writes the configs it saves with units (``exact_time``), so a saved
``config.yaml`` loads back under the same rule. A string is read as a number, an
optional ``/`` and one unit name (``3ms``, ``1.5 s``, ``64 KiB``, ``500/s``, ``2 kHz``): the
unit is looked up in pint's registry and converted by pint, but the text is never evaluated as
an expression (pint would compute ``9**9**9 ns`` for ever). A unit of the wrong kind is refused,
dimensionless ones included (``1 percent`` is not a size, ``20 ms / s`` not a time).

Every value is finite and bounded: times at most ``MAX_TIME_NS`` (one day; simulated time then
stays far inside 64-bit nanoseconds), sizes at most ``MAX_SIZE_BYTES`` (1 PiB).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

import pint
from pydantic import SerializationInfo, SerializerFunctionWrapHandler, WrapSerializer

_UREG: pint.UnitRegistry = pint.UnitRegistry()
NS_PER_S = 1_000_000_000
MAX_TIME_NS = 86_400 * NS_PER_S
MAX_SIZE_BYTES = 1 << 50
_MAX_TEXT = 100

# a number, an optional "/" (a rate: per unit), an optional unit name (letters first: µs works)
_QUANTITY = re.compile(
    r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(?:(/?)\s*([^\W\d_]\w*))?\s*"
)

# kind -> (what a value is, what its unit measures, root unit in pint, the unit desim works
# in, units to suggest)
_KINDS = {
    "time": ("a duration", "time", "second", "ns", "ns, us, ms or s"),
    "size": ("a size", "size", "bit", "B", "B, KiB or MiB"),
    "rate": ("a rate", "rate", "1/second", "1/ns", "e.g. 500/s, 2/ms or 3 kHz"),
}


class UnitError(ValueError):
    """A quantity could not be read in the unit the field needs."""


_TIME_UNIT_REQUIRED: ContextVar[bool] = ContextVar("desim_time_unit_required", default=False)


@contextmanager
def units_required(on: bool = True) -> Iterator[None]:
    """Within it, a non-zero time with no unit is an error (``on=False``: allowed again, for
    values desim itself supplies, such as cost profiles and empirical sample files)."""
    token = _TIME_UNIT_REQUIRED.set(on)
    try:
        yield
    finally:
        _TIME_UNIT_REQUIRED.reset(token)


def _no_unit(value: object) -> bool:
    if isinstance(value, str):
        m = _QUANTITY.fullmatch(value) if len(value) <= _MAX_TEXT else None
        return m is not None and m.group(3) is None
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind_of(value: object) -> str:
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if value is None:
        return "nothing"
    return f"a {type(value).__name__}"


@lru_cache(maxsize=64)
def _unit(name: str, kind: str) -> pint.Unit:
    _, measures, root, _, use = _KINDS[kind]
    try:
        unit = _UREG.parse_units(name)  # one name: nothing to evaluate
    except (pint.UndefinedUnitError, ValueError, AttributeError, TypeError):
        raise UnitError(f"unknown unit {name!r}; use {use}") from None
    if _UREG.get_root_units(unit)[1] != _UREG.parse_units(root):
        raise UnitError(f"{name!r} is not a unit of {measures}; use {use}")
    return unit


@lru_cache(maxsize=4096)
def _parse(text: str, kind: str) -> float:
    """``text`` in the base unit of ``kind`` (a float; bare numbers are in the base unit)."""
    what, _, _, base, use = _KINDS[kind]
    m = _QUANTITY.fullmatch(text) if len(text) <= _MAX_TEXT else None
    if m is None:
        raise UnitError(f"cannot read {text!r} as {what}: write a number and one unit ({use})")
    number, per, name = m.groups()
    mag: int | float = int(number) if number.lstrip("+-").isdigit() else float(number)
    if name is None:
        return mag if kind != "rate" else mag / NS_PER_S
    if per and kind != "rate":
        raise UnitError(f"{text!r} is not {what}; use {use}")
    try:
        if per:  # events per unit of time
            q = mag / _UREG.Quantity(1, _unit(name, "time"))
        else:
            q = _UREG.Quantity(mag, _unit(name, kind))
    except UnitError as exc:
        raise UnitError(f"{text!r} is not {what} ({'after /, ' if per else ''}{exc})") from None
    x = q.to(base).magnitude
    # a conversion's binary rounding ("2us" -> 1999.9999999999998 ns) is not what was written:
    # keep the 15 significant digits a double holds exactly; base-unit text passes untouched
    return x if q.units == _UREG.parse_units(base) else float(f"{x:.15g}")


def _value(value: object, kind: str) -> float:
    what = _KINDS[kind][0]
    if isinstance(value, str):
        x = _parse(value, kind)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        x = value if kind != "rate" else value / NS_PER_S
    else:
        example = {"time": "'3ms'", "size": "'4KiB'", "rate": "'500/s'"}[kind]
        raise UnitError(
            f"{what} must be a number or a string like {example}, not {_kind_of(value)}"
        )
    if not math.isfinite(x):
        raise UnitError(f"{value!r} is not a finite {what[2:]}")
    return x


def parse_time(value: object) -> float:
    """A duration in nanoseconds, not rounded (a distribution's parameters): ``parse_time_ns``'s
    rules otherwise."""
    ns = _value(value, "time")
    if ns and _TIME_UNIT_REQUIRED.get() and _no_unit(value):
        n = str(value).strip()
        raise UnitError(f"{n} has no unit: write {n}ns, {n}us, {n}ms or {n}s")
    if abs(ns) > MAX_TIME_NS:
        raise UnitError(f"{value!r} is longer than 1 day, the most desim simulates")
    return ns


def parse_time_ns(value: object) -> int:
    """A duration in integer nanoseconds: ``25ns``, ``2us``, ``3ms``, ``1.5s``; a number is ns.

    At most one day (``MAX_TIME_NS``) either way: no run is that long, and sums of such times
    stay far inside int64.
    """
    return round(parse_time(value))


def parse_wall_seconds(text: str) -> float:
    """A wall-clock limit given on a command line (``30s``, ``10min``) in seconds: positive, at
    most a day, and with its unit (a bare number could mean seconds or nanoseconds)."""
    if _no_unit(text):
        raise UnitError("no unit")
    try:
        ns = parse_time(text)
    except (ValueError, TypeError, ArithmeticError):
        raise UnitError("not a duration") from None
    if not ns > 0:
        raise UnitError("not positive")
    return ns / 1e9


def parse_size_bytes(value: object) -> int:
    """A size in bytes: ``4KiB``, ``64KiB``, ``2KiB``; a bare number is bytes (at most 1 PiB)."""
    b = round(_value(value, "size"))
    if abs(b) > MAX_SIZE_BYTES:
        raise UnitError(f"{value!r} is larger than 1 PiB, the most desim accepts")
    return b


def parse_rate_per_ns(value: object) -> float:
    """A rate in events per nanosecond: ``500/s``, ``2/ms``, ``2 kHz``; a bare number is per second."""
    return float(_value(value, "rate"))


def exact_time(ns: float) -> str:
    """``ns`` as a time with a unit that reads back to exactly the same value (``20ms``,
    ``1500us``, ``966ns``, ``499999.99999999994ns``): how desim writes times in saved configs."""
    if float(ns).is_integer():
        n = int(ns)
        for unit, scale in (("s", NS_PER_S), ("ms", 1_000_000), ("us", 1_000)):
            if n and n % scale == 0:
                return f"{n // scale}{unit}"
        return f"{n}ns"
    return f"{ns!r}ns"


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


# the parameters of a distribution (desim.distributions) that hold quantities, not log-space
DIST_QUANTITY_FIELDS = ("value", "mean", "low", "high", "median", "p99", "p95")


def with_time_units(out: Any) -> Any:
    """A dumped time (ns) or time distribution with its times written with units
    (``exact_time``), so that a saved config reads back under ``units_required``."""
    if isinstance(out, int | float) and not isinstance(out, bool):
        return exact_time(out)
    if isinstance(out, dict):
        out = {
            k: exact_time(v) if k in DIST_QUANTITY_FIELDS and isinstance(v, int | float) else v
            for k, v in out.items()
        }
        if isinstance(out.get("values"), list) and out.get("file") is None:
            out["values"] = [exact_time(v) for v in out["values"]]
    return out


def time_serializer(
    value: Any, handler: SerializerFunctionWrapHandler, info: SerializationInfo
) -> Any:
    """Pydantic wrap serializer of times: plain numbers (ns) unless the dump asks for units
    (``context={"units": True}``, as ``Config.to_yaml_dict`` does)."""
    out = handler(value)
    return with_time_units(out) if (info.context or {}).get("units") else out


TIME_UNITS = WrapSerializer(time_serializer)
