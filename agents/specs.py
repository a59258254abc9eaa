"""Model specs on agents: the `provider:model` grammar here, provider checks by registry.

agents sits below conversations (which knows the providers), so it checks the grammar itself
and asks whatever checks were registered (``register_model_spec_check``): the composition root
registers conversations' ``validate_spec`` at start-up, so an unknown provider is refused
when the agent is saved, as a conversation's model is.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from core.errors import ApplicationError

# A provider name, then optionally :model (no whitespace, no NUL); `local` alone is valid.
SPEC_PATTERN = r"^[a-z][a-z0-9_.-]{0,49}(?::[^\s\x00]{1,150})?$"
_SPEC = re.compile(SPEC_PATTERN)
_checks: list[Callable[[str], object]] = []
_patterns: list[Callable[[], str]] = []


def register_model_spec_pattern(pattern: Callable[[], str]) -> None:
    """``pattern()``: the regex of the specs the registered checks accept, for the schema."""
    if pattern not in _patterns:
        _patterns.append(pattern)


def model_spec_pattern() -> str:
    """The OpenAPI pattern of a model spec: the registered one (the providers this
    deployment can reach), else the grammar alone."""
    if not _patterns:
        return SPEC_PATTERN
    # Both must hold: the grammar here (a lookahead) and the registered check's pattern.
    return f"^(?={SPEC_PATTERN[1:]}){_patterns[-1]()[1:]}"


def register_model_spec_check(check: Callable[[str], object]) -> None:
    """``check(spec)`` raises ApplicationError for a spec it refuses."""
    if check not in _checks:
        _checks.append(check)


def validate_model_spec(spec: str, *, field: str = "model") -> str:
    """A `provider:model` spec (empty: the deployment's default), checked by every
    registered check; ApplicationError naming ``field`` otherwise."""
    if spec == "":
        return spec
    if not _SPEC.match(spec):
        raise ApplicationError(
            "A model is provider:model, e.g. openai:gpt-4o-mini.",
            code="invalid_model",
            details={field: ["Use provider:model (lowercase provider, no spaces)."]},
        )
    for check in _checks:
        try:
            check(spec)
        except ApplicationError as exc:
            messages: list[str] = []
            if isinstance(exc.details, dict):
                for value in exc.details.values():
                    messages.extend(value if isinstance(value, list) else [str(value)])
            raise ApplicationError(
                exc.message, code=exc.code, details={field: messages or [exc.message]}
            ) from exc
    return spec
