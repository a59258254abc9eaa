from __future__ import annotations

import uuid
from decimal import Decimal

from django.conf import settings
from django.contrib.postgres.indexes import BrinIndex, GinIndex
from django.contrib.postgres.search import SearchVector
from django.core.validators import MaxLengthValidator, MaxValueValidator, MinValueValidator
from django.db import models

SEARCH_CONFIG = "english"

# The one home of the per-conversation settings' ranges. The fields' validators below
# hold them for the admin's forms and the service (conversation_settings_check); the API's
# serializer declares its bounds from here too, so every surface accepts the same values.
SETTING_RANGES: dict[str, tuple[int, int]] = {
    "temperature": (0, 2),
    "max_tokens": (1, 200_000),
    "memory_window": (2, 1000),
    "relevance_floor": (0, 1),
}
SYSTEM_PROMPT_MAX_CHARS = 20_000


def _in_range(name: str) -> list[MinValueValidator | MaxValueValidator]:
    low, high = SETTING_RANGES[name]
    return [MinValueValidator(low), MaxValueValidator(high)]


class ModelPrice(models.Model):
    """What a model costs, per million tokens; operators edit it in the admin."""

    model = models.CharField(
        max_length=200,
        unique=True,
        help_text="A model spec as conversations use it, e.g. `openai:gpt-4o-mini`, or a bare "
        "model name that matches any provider.",
    )
    input_per_million = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    output_per_million = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    currency = models.CharField(max_length=3, default="USD")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model"]

    def __str__(self) -> str:
        return self.model


class Conversation(models.Model):
    class Workflow(models.TextChoices):
        BASIC = "basic", "Basic chat"
        RAG = "rag", "Chat with the knowledge base (cited sources)"
        AGENT = "agent", "An agent: its prompt, model, tools and knowledge scope"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=300, blank=True)
    workflow = models.CharField(max_length=20, choices=Workflow.choices, default=Workflow.BASIC)
    # Model settings; empty means the deployment's defaults.
    model = models.CharField(max_length=200, blank=True)
    temperature = models.FloatField(null=True, blank=True, validators=_in_range("temperature"))
    max_tokens = models.PositiveIntegerField(
        null=True, blank=True, validators=_in_range("max_tokens")
    )
    system_prompt = models.TextField(
        blank=True, validators=[MaxLengthValidator(SYSTEM_PROMPT_MAX_CHARS)]
    )
    memory_window = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=_in_range("memory_window"),
        help_text="Messages kept verbatim in the model's context.",
    )
    relevance_floor = models.FloatField(
        null=True,
        blank=True,
        validators=_in_range("relevance_floor"),
        help_text="rag: passages less similar (cosine, 0-1) to the question are not given to "
        "the model. Empty means CHATTER_RAG_RELEVANCE_FLOOR.",
    )
    metadata = models.JSONField(default=dict, blank=True)
    # The agent whose prompt, model, tools and knowledge scope the turns use (workflow
    # `agent`). SET_NULL: deleting an agent leaves its conversations readable; their next
    # turns answer as a plain conversation.
    agent = models.ForeignKey(
        "agents.Agent",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="conversations",
    )
    agent_auto = models.BooleanField(
        default=False,
        help_text='Created with agent "auto": the first message is routed to an agent '
        "(agents.services.agent_route), which the conversation is then bound to.",
    )
    # Lineage: a branch continues a parent from one of its messages; a fork copies it whole.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="branches"
    )
    branch_point = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    forked_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="forks"
    )
    summary = models.TextField(blank=True)
    summarized_messages = models.PositiveIntegerField(
        default=0, help_text="How many of the oldest messages the summary stands for."
    )
    message_count = models.PositiveIntegerField(default=0)
    tokens_in = models.PositiveBigIntegerField(default=0)
    tokens_out = models.PositiveBigIntegerField(default=0)
    # Null once any reply's price is unknown: a total with an unknown part is unknown.
    cost = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal(0), null=True)
    # Set while a reply is being produced: a second turn on the same conversation is refused
    # (409) rather than interleaved. A crashed turn is taken over once this is stale.
    turn_started_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [
            models.Index(fields=["owner", "-updated_at"]),
            GinIndex(SearchVector("title", config=SEARCH_CONFIG), name="conversation_title_fts"),
        ]

    def __str__(self) -> str:
        return self.title or f"Conversation {str(self.id)[:8]}"

    @property
    def agent_ref(self) -> str | None:
        """The bound agent's id, "auto" while the first message is still to be routed."""
        if self.agent_id:
            return str(self.agent_id)
        return "auto" if self.agent_auto else None


class Message(models.Model):
    class Role(models.TextChoices):
        SYSTEM = "system"
        USER = "user"
        ASSISTANT = "assistant"
        TOOL = "tool"

    class Status(models.TextChoices):
        COMPLETE = "complete"
        INCOMPLETE = "incomplete"
        ERROR = "error"
        # The turn is paused on a tool call that needs a person's approval (ToolApproval).
        AWAITING_APPROVAL = "awaiting_approval"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    position = models.PositiveIntegerField()
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField(blank=True)
    tool_calls = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.COMPLETE)
    error = models.TextField(blank=True)
    model = models.CharField(max_length=200, blank=True)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    # Null when the model's price is unknown (no admin row, not in the price database).
    cost = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal(0), null=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # The LangGraph checkpoint whose state ends with this message: branching starts there.
    checkpoint_id = models.CharField(max_length=64, blank=True)

    class FeedbackScale(models.TextChoices):
        THUMBS = "thumbs", "Thumbs (-1, 0, 1)"
        STARS = "stars", "Stars (1 to 5)"

    feedback_rating = models.SmallIntegerField(null=True, blank=True)
    # What the rating is on (1 is a thumbs-up or one star). Blank for ratings stored before
    # the scale was named whose value fits both (1).
    feedback_scale = models.CharField(max_length=10, choices=FeedbackScale.choices, blank=True)
    feedback_comment = models.TextField(blank=True)
    feedback_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["conversation", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "position"], name="message_unique_position"
            )
        ]
        indexes = [
            GinIndex(SearchVector("content", config=SEARCH_CONFIG), name="message_content_fts"),
            # The console's windows (the dashboard's 30 days, /metrics' today): rows arrive in
            # time order, so a block-range index serves them at almost no cost per insert.
            BrinIndex(fields=["created_at"], name="message_created_brin"),
        ]

    def __str__(self) -> str:
        return f"{self.role} #{self.position}: {self.content[:60]}"


class ToolApproval(models.Model):
    """A tool call that waits for a person: the turn is paused on a LangGraph interrupt
    (persisted in its checkpoint) until the conversation's owner (or staff) approves or
    rejects it; a rejection is handed to the model as the tool's result."""

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="tool_approvals"
    )
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="tool_approvals")
    tool_call_id = models.CharField(max_length=200)
    tool_name = models.CharField(max_length=200)
    args = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # A turn waits on one call at a time: the interrupts of a step come one by one.
            models.UniqueConstraint(
                fields=["conversation"],
                condition=models.Q(status="pending"),
                name="tool_approval_one_pending_per_conversation",
            ),
            models.UniqueConstraint(
                fields=["message", "tool_call_id"], name="tool_approval_unique_call"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tool_name} ({self.status})"
