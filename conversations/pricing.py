"""What a reply costs, and how costs are written.

Why and how: docs/architecture.md, "conversations/pricing.py".
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings

from conversations.providers import LOCAL_MODEL_NAME, split_spec

COST_QUANTUM = Decimal("0.000001")  # the cost columns' scale (decimal_places=6)

# Chatter's providers that genai-prices knows, by its provider ids.
CATALOG_PROVIDERS = {"openai": "openai", "anthropic": "anthropic"}


def format_cost(value: Decimal | None) -> str | None:
    """A cost as every endpoint writes it: six decimals, or None when unknown."""
    if value is None:
        return None
    return str(Decimal(value).quantize(COST_QUANTUM))


def catalog_cost(*, spec: str, tokens_in: int, tokens_out: int) -> Decimal | None:
    """The price database's cost for this usage; None when it does not know the model."""
    provider, model = split_spec(spec)
    if provider == LOCAL_MODEL_NAME:
        return Decimal(0)  # no model ran
    if provider not in CATALOG_PROVIDERS or not model:
        return None
    where: dict[str, str] = {"provider_id": CATALOG_PROVIDERS[provider]}
    if provider == "openai" and settings.OPENAI_BASE_URL:
        # An OpenAI-compatible server elsewhere (Ollama, vLLM, a proxy) is not priced as
        # OpenAI: the database matches the URL to a provider it knows, or prices unknown.
        where = {"provider_api_url": settings.OPENAI_BASE_URL}
    import genai_prices  # its price tables load on the first reply, not at django.setup()

    try:
        price = genai_prices.calc_price(
            genai_prices.Usage(input_tokens=tokens_in, output_tokens=tokens_out), model, **where
        )
    except LookupError:
        return None
    return price.total_price.quantize(COST_QUANTUM)
