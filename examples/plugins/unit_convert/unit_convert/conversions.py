"""Unit tables and the conversion itself: plain Python, no Chatter needed."""

from __future__ import annotations

# Each unit as a factor of its dimension's base unit (metre, kilogram, litre, second).
FACTORS: dict[str, dict[str, float]] = {
    "length": {
        "m": 1.0,
        "km": 1000.0,
        "cm": 0.01,
        "mm": 0.001,
        "mi": 1609.344,
        "yd": 0.9144,
        "ft": 0.3048,
        "in": 0.0254,
        "nmi": 1852.0,
    },
    "mass": {
        "kg": 1.0,
        "g": 0.001,
        "mg": 1e-6,
        "t": 1000.0,
        "lb": 0.45359237,
        "oz": 0.028349523125,
    },
    "volume": {
        "l": 1.0,
        "ml": 0.001,
        "m3": 1000.0,
        "gal": 3.785411784,
        "qt": 0.946352946,
        "pt": 0.473176473,
        "cup": 0.2365882365,
    },
    "time": {"s": 1.0, "ms": 0.001, "min": 60.0, "h": 3600.0, "day": 86400.0, "week": 604800.0},
}
TEMPERATURES = {"c", "f", "k"}
ALIASES = {
    "meter": "m",
    "metre": "m",
    "meters": "m",
    "kilometer": "km",
    "mile": "mi",
    "miles": "mi",
    "foot": "ft",
    "feet": "ft",
    "inch": "in",
    "inches": "in",
    "kilogram": "kg",
    "gram": "g",
    "pound": "lb",
    "pounds": "lb",
    "lbs": "lb",
    "ounce": "oz",
    "liter": "l",
    "litre": "l",
    "gallon": "gal",
    "second": "s",
    "minute": "min",
    "hour": "h",
    "celsius": "c",
    "°c": "c",
    "fahrenheit": "f",
    "°f": "f",
    "kelvin": "k",
}


class ConversionError(ValueError):
    pass


def normalize(unit: str) -> str:
    key = unit.strip().lower()
    return ALIASES.get(key, key)


def dimension(unit: str) -> str | None:
    if unit in TEMPERATURES:
        return "temperature"
    for name, table in FACTORS.items():
        if unit in table:
            return name
    return None


def _to_kelvin(value: float, unit: str) -> float:
    return {"c": value + 273.15, "f": (value - 32) * 5 / 9 + 273.15, "k": value}[unit]


def _from_kelvin(value: float, unit: str) -> float:
    return {"c": value - 273.15, "f": (value - 273.15) * 9 / 5 + 32, "k": value}[unit]


def convert(value: float, source: str, target: str) -> float:
    """``value`` in ``source`` units, expressed in ``target`` units."""
    a, b = normalize(source), normalize(target)
    da, db = dimension(a), dimension(b)
    if da is None or db is None:
        unknown = source if da is None else target
        raise ConversionError(f"unknown unit {unknown!r}")
    if da != db:
        raise ConversionError(f"cannot convert {da} ({source}) to {db} ({target})")
    if da == "temperature":
        return _from_kelvin(_to_kelvin(value, a), b)
    return value * FACTORS[da][a] / FACTORS[da][b]
