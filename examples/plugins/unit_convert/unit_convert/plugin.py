"""The plugin's entry point: registers the `unit_convert` tool and a health check."""

from __future__ import annotations

import json
import re
from typing import Any

from unit_convert.conversions import ConversionError, convert, dimension, normalize

CURRENCY = re.compile(r"^[A-Za-z]{3}$")

ARGS_SCHEMA = {
    "type": "object",
    "properties": {
        "value": {"type": "number", "description": "The amount to convert."},
        "from_unit": {"type": "string", "description": "e.g. km, lb, F, gal, or EUR."},
        "to_unit": {"type": "string", "description": "e.g. mi, kg, C, l, or USD."},
    },
    "required": ["value", "from_unit", "to_unit"],
}


def _currency(ctx: Any, value: float, source: str, target: str) -> float:
    url = ctx.config.get("rates_url")
    if not url:
        raise ConversionError("currency conversion needs rates_url in the configuration")
    headers = {}
    if ctx.config.get("rates_api_key"):
        headers["Authorization"] = f"Bearer {ctx.config['rates_api_key']}"
    # ctx.http_get checks the `network` grant and goes through the platform's guard.
    answer = ctx.http_get(url, headers=headers)
    if answer["status"] != 200:
        raise ConversionError(f"the rates source answered {answer['status']}")
    document = json.loads(answer["text"])
    rates = {code.upper(): float(rate) for code, rate in document["rates"].items()}
    rates[document["base"].upper()] = 1.0
    try:
        return value / rates[source.upper()] * rates[target.upper()]
    except KeyError as exc:
        raise ConversionError(f"no rate for {exc.args[0]}") from None


def unit_convert(ctx: Any, value: float, from_unit: str, to_unit: str) -> str:
    precision = int(ctx.config.get("precision", 6))
    known = dimension(normalize(from_unit)) and dimension(normalize(to_unit))
    if not known and CURRENCY.match(from_unit) and CURRENCY.match(to_unit):
        result = _currency(ctx, float(value), from_unit, to_unit)
    else:
        result = convert(float(value), from_unit, to_unit)
    return json.dumps(
        {"value": value, "from": from_unit, "to": to_unit, "result": round(result, precision)}
    )


def health(ctx: Any) -> dict[str, Any]:
    if abs(convert(1, "km", "m") - 1000) > 1e-9 or abs(convert(100, "C", "F") - 212) > 1e-9:
        raise RuntimeError("the conversion tables are inconsistent")
    return {"currencies": bool(ctx.config.get("rates_url"))}


def register(plugin: Any) -> None:
    plugin.tool(
        "unit_convert",
        description="Convert a value between units: length (m, km, mi, ft, in), mass (kg, g, "
        "lb, oz), volume (l, ml, gal), time (s, min, h, day), temperature (C, F, K), and "
        "currencies (ISO codes) when a rates source is configured.",
        func=unit_convert,
        args_schema=ARGS_SCHEMA,
    )
    plugin.health_check(health)
