"""Agents: configured assistants (prompt, model, tools, knowledge scope), their prompt
history, and the variants Thompson sampling chooses between."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class Agent(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        INACTIVE = "inactive", "Inactive"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No owner: a shared agent, made by staff, that every user may use.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="agents",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    name = models.CharField(max_length=200)
    slug = models.CharField(max_length=64)
    # Not a choices field: plugins add types through agents.types.register_agent_type.
    type = models.CharField(max_length=64, default="conversational")
    description = models.TextField(blank=True)
    system_prompt = models.TextField(blank=True)
    model = models.CharField(
        max_length=200, blank=True, help_text="provider:model; empty: the deployment's default."
    )
    temperature = models.FloatField(null=True, blank=True)
    max_tokens = models.PositiveIntegerField(null=True, blank=True)
    fallback_model = models.CharField(
        max_length=200, blank=True, help_text="Used when the primary model fails or times out."
    )
    capabilities = models.JSONField(default=list, blank=True)  # [{name, description}]
    tools = models.JSONField(default=list, blank=True)  # names in agents.tools' registry
    knowledge_filter = models.JSONField(default=dict, blank=True)  # knowledge.filters grammar
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "slug"],
                condition=Q(owner__isnull=False),
                name="agent_slug_unique_per_owner",
            ),
            models.UniqueConstraint(
                fields=["slug"], condition=Q(owner__isnull=True), name="agent_slug_unique_shared"
            ),
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def shared(self) -> bool:
        return self.owner_id is None


class AgentPromptVersion(models.Model):
    """Every system prompt an agent has had: who set it, when, the text."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="prompt_versions")
    version = models.PositiveIntegerField()
    system_prompt = models.TextField(blank=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["agent", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "version"], name="agent_prompt_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.agent_id} v{self.version}"


class AgentVariant(models.Model):
    """A prompt or parameter set of an agent, with its Beta(alpha, beta) posterior of the
    reward (feedback mapped to [0, 1]); Beta(1, 1), uniform, before any feedback."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="variants")
    name = models.CharField(max_length=100)
    system_prompt = models.TextField(blank=True, help_text="Empty: the agent's own prompt.")
    parameters = models.JSONField(
        default=dict, blank=True, help_text="Overrides: model, temperature, max_tokens."
    )
    alpha = models.FloatField(default=1.0)
    beta = models.FloatField(default=1.0)
    feedback_count = models.PositiveIntegerField(default=0)
    reward_sum = models.FloatField(default=0.0)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["agent", "name"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "name"], name="agent_variant_name_unique"),
            models.CheckConstraint(
                condition=Q(alpha__gt=0) & Q(beta__gt=0), name="agent_variant_posterior_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.agent_id}:{self.name}"

    @property
    def posterior_mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


class AgentVariantChoice(models.Model):
    """One Thompson-sampling pick: which variant, the sampled value, and its reward later."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="variant_choices")
    variant = models.ForeignKey(AgentVariant, on_delete=models.CASCADE, related_name="choices")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    sample = models.FloatField(help_text="The chosen variant's draw from its posterior.")
    samples = models.JSONField(default=dict, help_text="Every variant's draw: {name: value}.")
    reward = models.FloatField(null=True, blank=True)
    rewarded_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["agent", "-created_at"], name="agent_choice_recent")]

    def __str__(self) -> str:
        return f"{self.variant_id} @ {self.created_at:%Y-%m-%d %H:%M:%S}"


class MCPServer(models.Model):
    """A Model Context Protocol server whose tools agents may use: a stdio command or a
    streamable-HTTP URL. Its tools are listed when it is refreshed; a server that fails is
    marked unhealthy (its tools are then not offered), never fatal."""

    class Transport(models.TextChoices):
        STDIO = "stdio", "stdio (a command)"
        STREAMABLE_HTTP = "streamable_http", "Streamable HTTP (a URL)"

    name = models.SlugField(
        max_length=40, unique=True, help_text="Its tools are named mcp__<name>__<tool>."
    )
    transport = models.CharField(max_length=20, choices=Transport.choices)
    command = models.CharField(max_length=500, blank=True, help_text="stdio: the executable.")
    args = models.JSONField(default=list, blank=True, help_text="stdio: its arguments.")
    # An operator's own server may be internal: the SSRF guard is for what users name.
    url = models.CharField(max_length=2000, blank=True, help_text="streamable_http: the URL.")
    enabled = models.BooleanField(default=True)
    healthy = models.BooleanField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    tools = models.JSONField(default=list, blank=True)  # [{name, description, inputSchema}]
    approval_tools = models.JSONField(
        default=list,
        blank=True,
        help_text="Names of this server's tools (as the server names them) whose every call "
        "waits for a person's approval.",
    )
    checked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "MCP server"

    def __str__(self) -> str:
        return self.name


class AgentInteraction(models.Model):
    """One reply an agent produced, in a conversation or through the OpenAI-compatible API:
    what it cost, how long it took, the tools it called, the model that actually answered
    (the fallback's, when the primary failed), how confident it was and, later, the user's
    feedback. The agent's metrics are read from these rows."""

    class Source(models.TextChoices):
        CONVERSATION = "conversation", "Conversation"
        OPENAI = "openai", "OpenAI-compatible API"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="interactions")
    variant = models.ForeignKey(
        AgentVariant, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    choice = models.ForeignKey(
        AgentVariantChoice, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    source = models.CharField(max_length=20, choices=Source.choices)
    # Not foreign keys: conversations sit above agents, and an interaction outlives them.
    conversation_id = models.UUIDField(null=True, blank=True)
    message_id = models.UUIDField(null=True, blank=True, unique=True)
    model_used = models.CharField(max_length=200, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    # [{id, name, args, result, latency_ms, error, approval}] in call order.
    tool_calls = models.JSONField(default=list, blank=True)
    tool_call_count = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    confidence = models.FloatField(null=True, blank=True)
    confidence_method = models.CharField(max_length=30, blank=True)
    feedback_reward = models.FloatField(null=True, blank=True)
    feedback_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["agent", "-created_at"], name="agent_interaction_recent")]

    def __str__(self) -> str:
        return f"{self.agent_id} @ {self.created_at:%Y-%m-%d %H:%M:%S}"
