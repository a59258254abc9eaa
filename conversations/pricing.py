"""What a reply costs, and how costs are written."""

from __future__ import annotations

from decimal import Decimal

COST_QUANTUM = Decimal("0.000001")  # the cost columns' scale (decimal_places=6)


def format_cost(value: Decimal | None) -> str | None:
    """A cost as every endpoint writes it: six decimals, or None when unknown."""
    if value is None:
        return None
    return str(Decimal(value).quantize(COST_QUANTUM))
