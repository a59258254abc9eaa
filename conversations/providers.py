"""Chat models by spec (`provider:model`), through LangChain.

Why and how: docs/architecture.md, "conversations/providers.py".
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings

from core.errors import ApplicationError

if TYPE_CHECKING:  # LangChain loads with the first model, not at django.setup() (issue 10)
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage


@dataclass(frozen=True)
class ModelOptions:
    temperature: float | None = None
    max_tokens: int | None = None


ProviderFactory = Callable[[str, ModelOptions], "BaseChatModel"]
_providers: dict[str, ProviderFactory] = {}
# Providers that answer only once configured (a key, a server URL): checked when a spec is set.
_configured: dict[str, Callable[[], bool]] = {}
_modules_loaded = False
# Providers whose specs must name a model (`openai:gpt-4o-mini`); others default one.
NAMED_MODEL_PROVIDERS = frozenset({"openai", "anthropic"})


def register_provider(
    name: str, factory: ProviderFactory, *, configured: Callable[[], bool] | None = None
) -> None:
    """Make `name:<model>` specs resolve through `factory(model, options)`; `configured` says
    whether this deployment can reach it (settings are read when a spec is checked)."""
    _providers[name] = factory
    if configured is not None:
        _configured[name] = configured


def _load_provider_modules() -> None:
    global _modules_loaded
    if not _modules_loaded:
        for module in settings.CHATTER_PROVIDER_MODULES:
            importlib.import_module(module)
        _modules_loaded = True


def default_model_spec() -> str:
    return settings.CHATTER_DEFAULT_MODEL


def split_spec(spec: str) -> tuple[str, str]:
    provider, _, model = spec.partition(":")
    return provider, model


def chat_model(spec: str, options: ModelOptions | None = None) -> BaseChatModel:
    """A LangChain chat model for `spec`; unknown providers are a 400 envelope."""
    _load_provider_modules()
    provider, model = split_spec(spec)
    factory = _providers.get(provider)
    if factory is None:
        raise ApplicationError(
            f"Unknown model provider {provider!r}.",
            code="unknown_model",
            details={
                "model": [f"Use one of: {', '.join(sorted(_providers))} (as provider:model)."]
            },
        )
    return factory(model, options or ModelOptions())


def validate_spec(spec: str) -> str:
    """Check a spec names a known provider (and a model where the provider needs one)."""
    _load_provider_modules()
    provider, model = split_spec(spec)
    if provider not in _providers:
        raise ApplicationError(
            f"Unknown model provider {provider!r}.",
            code="unknown_model",
            details={"model": [f"Known providers: {', '.join(sorted(_providers))}."]},
        )
    if provider in NAMED_MODEL_PROVIDERS and not model:
        raise ApplicationError(
            "Name the model, e.g. openai:gpt-4o-mini.",
            code="unknown_model",
            details={"model": ["Use provider:model."]},
        )
    if not _is_configured(provider):
        # Refused now, not at the first message with a 503: nothing could answer it.
        raise ApplicationError(
            f"The {provider} provider is not configured on this deployment.",
            code="model_unavailable",
            details={"model": [f"Available: {', '.join(available_providers())}."]},
        )
    return spec


def _is_configured(provider: str) -> bool:
    check = _configured.get(provider)
    return check is None or check()


def available_providers() -> list[str]:
    """The providers a conversation may name here (known and configured)."""
    _load_provider_modules()
    return sorted(p for p in _providers if _is_configured(p))


# --- provider failures ---------------------------------------------------------------------
class ProviderError(ApplicationError):
    """The language model's provider failed; the user's message is kept."""

    status = 502
    code = "provider_error"


def provider_failure(exc: Exception) -> ProviderError | None:
    """Classify an exception from a LangChain provider (OpenAI, Anthropic, compatible
    servers); None when it is not a provider failure (a bug, to be a logged 500)."""
    name = type(exc).__name__
    status = getattr(exc, "status_code", None)
    message = str(exc)[:500]
    if "Timeout" in name:
        return ProviderError(
            f"The model provider timed out: {message}", code="provider_timeout", status=503
        )
    if "Connection" in name:
        return ProviderError(
            f"The model provider is unreachable: {message}", code="provider_unreachable", status=503
        )
    if status == 429:
        return ProviderError(
            f"The model provider is rate limiting: {message}",
            code="provider_rate_limited",
            status=503,
        )
    if status in (401, 403):
        return ProviderError(
            f"The model provider refused the credentials: {message}", code="provider_auth_failed"
        )
    if isinstance(status, int) and status >= 500:
        return ProviderError(f"The model provider failed: {message}", code="provider_error")
    if isinstance(status, int):
        return ProviderError(
            f"The model provider rejected the request: {message}", code="provider_rejected"
        )
    return None


# --- OpenAI and compatible servers -----------------------------------------------------------
def _openai(model: str, options: ModelOptions) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    kwargs: dict[str, Any] = {}
    if options.max_tokens:
        kwargs["max_tokens"] = options.max_tokens
    if options.temperature is not None:
        kwargs["temperature"] = options.temperature
    return ChatOpenAI(
        model=model,
        # Local OpenAI-compatible servers (Ollama, llama.cpp) accept any key.
        api_key=settings.OPENAI_API_KEY or "not-needed",
        base_url=settings.OPENAI_BASE_URL or None,
        timeout=settings.CHATTER_LLM_TIMEOUT,
        max_retries=settings.CHATTER_LLM_MAX_RETRIES,
        stream_usage=True,
        **kwargs,
    )


def _anthropic(model: str, options: ModelOptions) -> BaseChatModel:
    from langchain_anthropic import ChatAnthropic

    kwargs: dict[str, Any] = {"max_tokens": options.max_tokens or 1024}
    if options.temperature is not None:
        kwargs["temperature"] = options.temperature
    return ChatAnthropic(
        model=model,
        api_key=settings.ANTHROPIC_API_KEY or "not-configured",
        timeout=settings.CHATTER_LLM_TIMEOUT,
        max_retries=settings.CHATTER_LLM_MAX_RETRIES,
        **kwargs,
    )


# --- local: no model, said plainly -----------------------------------------------------------
_TOKEN = re.compile(r"\w+|[^\w\s]")

NO_MODEL_TEXT = (
    "No language model is configured for this Chatter instance, so this reply was not "
    "written by one. To get real answers, set OPENAI_API_KEY (or OPENAI_BASE_URL for an "
    "OpenAI-compatible server such as Ollama, vLLM or llama.cpp) or ANTHROPIC_API_KEY, "
    "or choose another model for this conversation."
)


def count_tokens(text: str) -> int:
    """Word-and-punctuation count: the local provider's token measure (no tokenizer files
    can be downloaded offline; real providers report their own counts)."""
    return len(_TOKEN.findall(text))


PASSAGES_INTRO = (
    "No language model is configured for this Chatter instance, so I cannot compose an "
    "answer; these passages from your documents best match your question:"
)


LOCAL_MODEL_NAME = "local"


def written_without_model(message: BaseMessage) -> bool:
    """A reply the `local` provider composed (no language model wrote it). A real model
    later given the history must not see it as one of its own turns."""
    metadata = getattr(message, "response_metadata", None) or {}
    return message.type == "ai" and metadata.get("model_name") == LOCAL_MODEL_NAME


def _local(model: str, options: ModelOptions) -> BaseChatModel:
    from conversations.local_model import LocalChatModel

    return LocalChatModel()


register_provider(
    "openai", _openai, configured=lambda: bool(settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL)
)
register_provider("anthropic", _anthropic, configured=lambda: bool(settings.ANTHROPIC_API_KEY))
register_provider("local", _local)


def spec_pattern() -> str:
    """The specs `validate_spec` accepts, as one regex for the OpenAPI document (ECMA and
    Python alike): an available provider, then `:model` (a model name that is not blank once
    control characters are stripped, for the providers that need one)."""
    available = available_providers()
    named = [p for p in available if p in NAMED_MODEL_PROVIDERS]
    optional = [p for p in available if p not in NAMED_MODEL_PROVIDERS]
    visible = "(?:[^\\x00-\\x1f\\x7f-\\x9f\\s]|\\ufeff)"  # what normalize_line keeps
    choices = [f"(?:{'|'.join(named)}):[^\\x00]*{visible}[^\\x00]*"] if named else []
    if optional:
        choices.append(f"(?:{'|'.join(optional)})(?::[^\\x00]*)?")
    return f"^(?:{'|'.join(choices)})$"
