"""A/B tests: experiments with their variants and metrics, the sticky assignment of each unit
(a user) to a variant, the metric events recorded for it, the replies written under a
variant (exposures), and the alerts a degraded guardrail raised."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class Experiment(models.Model):
    class Type(models.TextChoices):
        PROMPT = "prompt", "Prompt (system_prompt)"
        MODEL = "model", "Model (model)"
        PARAMETER = "parameter", "Parameters (temperature, max_tokens)"
        WORKFLOW = "workflow", "Workflow (workflow: basic or rag)"

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        RUNNING = "running", "Running"
        PAUSED = "paused", "Paused"
        COMPLETED = "completed", "Completed"
        CANCELLED = "cancelled", "Cancelled"

    class Allocation(models.TextChoices):
        EQUAL = "equal", "Equal split"
        WEIGHTED = "weighted", "By the variants' weights"
        RAMP = "ramp", "Gradual rollout (a ramp schedule of traffic)"
        TARGETED = "targeted", "Only units whose attributes match the targeting rules"

    class Promotion(models.TextChoices):
        NONE = "", "Not promoted"
        AGENT = "agent", "Written into the agent's settings"
        DEFAULTS = "defaults", "Served to every covered turn as the new default"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="experiments"
    )
    name = models.CharField(max_length=200)
    key = models.CharField(
        max_length=64, help_text="Hashed with each unit's id: the assignment is deterministic."
    )
    description = models.TextField(blank=True)
    type = models.CharField(max_length=20, choices=Type.choices)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    allocation = models.CharField(max_length=20, choices=Allocation.choices, default="equal")
    traffic_percentage = models.FloatField(
        default=100.0, help_text="Share of units included (0-100); ramp: the schedule's instead."
    )
    # [{"hours": h, "traffic_percentage": p}]: p from h hours after the start, ascending.
    ramp_schedule = models.JSONField(default=list, blank=True)
    # [{"attribute", "operator", "value"}]: all must hold for a unit to be included.
    targeting = models.JSONField(default=list, blank=True)
    # Not a foreign key: agents sit above experiments. Set: the experiment covers the turns of
    # this agent's conversations; empty: the turns of conversations without an agent.
    agent_id = models.UUIDField(null=True, blank=True)
    confidence_level = models.FloatField(default=0.95)
    start_at = models.DateTimeField(
        null=True, blank=True, help_text="No unit is assigned before this time."
    )
    end_at = models.DateTimeField(
        null=True, blank=True, help_text="No unit is assigned, and no turn changed, after it."
    )
    started_at = models.DateTimeField(null=True, blank=True, editable=False)
    paused_at = models.DateTimeField(null=True, blank=True, editable=False)
    completed_at = models.DateTimeField(null=True, blank=True, editable=False)
    winner = models.ForeignKey(
        "Variant", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    promoted_to = models.CharField(
        max_length=20, choices=Promotion.choices, default="", blank=True, editable=False
    )
    # When a turn last asked for the guardrails to be checked (at most once a minute).
    guardrails_checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "key"], name="experiment_key_unique_per_owner")
        ]
        indexes = [models.Index(fields=["status"], name="experiment_status")]

    def __str__(self) -> str:
        return self.key

    @property
    def alpha(self) -> float:
        return 1 - self.confidence_level


class Variant(models.Model):
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="variants")
    name = models.CharField(max_length=64)
    is_control = models.BooleanField(default=False)
    weight = models.FloatField(default=1.0)
    # What the variant changes in a turn: system_prompt, model, temperature, max_tokens,
    # workflow (the keys the experiment's type allows); {} leaves the turn as it is.
    configuration = models.JSONField(default=dict, blank=True)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["experiment", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "name"], name="variant_name_unique"),
            models.UniqueConstraint(
                fields=["experiment"], condition=Q(is_control=True), name="variant_one_control"
            ),
            models.CheckConstraint(condition=Q(weight__gte=0), name="variant_weight_not_negative"),
        ]

    def __str__(self) -> str:
        return self.name


class Metric(models.Model):
    class Type(models.TextChoices):
        RESPONSE_TIME = "response_time", "Response time (ms, recorded by each turn)"
        USER_SATISFACTION = "user_satisfaction", "User satisfaction (feedback, 0 to 1)"
        ACCURACY = "accuracy", "Accuracy (posted by clients)"
        ENGAGEMENT = "engagement", "Engagement (1 per turn, summed per unit)"
        CONVERSION = "conversion", "Conversion (0/1 per unit)"
        ERROR_RATE = "error_rate", "Error rate (0/1 per turn)"
        TOKEN_USAGE = "token_usage", "Token usage (in + out, per turn)"
        COST = "cost", "Cost (per turn)"
        CUSTOM = "custom", "Custom (posted by clients)"

    class Aggregation(models.TextChoices):
        MEAN = "mean", "Mean of the unit's events"
        SUM = "sum", "Sum of the unit's events"
        MAX = "max", "Largest of the unit's events"

    class Direction(models.TextChoices):
        INCREASE = "increase", "Higher is better"
        DECREASE = "decrease", "Lower is better"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="metrics")
    name = models.CharField(max_length=64)
    type = models.CharField(max_length=30, choices=Type.choices)
    aggregation = models.CharField(max_length=10, choices=Aggregation.choices)
    direction = models.CharField(max_length=10, choices=Direction.choices)
    primary = models.BooleanField(default=False)
    guardrail = models.BooleanField(default=False)
    minimum_detectable_effect = models.FloatField(
        default=0.05, help_text="Relative (0.05: 5%): what the sample-size estimate aims at."
    )
    guardrail_threshold = models.FloatField(
        default=0.0,
        help_text="Guardrails: the relative degradation past which (once the sequential "
        "interval excludes no change) the experiment is paused.",
    )
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["experiment", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "name"], name="metric_name_unique"),
            models.CheckConstraint(
                condition=~(Q(primary=True) & Q(guardrail=True)), name="metric_primary_or_guardrail"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def binomial(self) -> bool:
        """A conversion is a 0/1 outcome per unit: a proportion, tested as one."""
        return self.type == self.Type.CONVERSION

    @property
    def role(self) -> str:
        return "primary" if self.primary else "guardrail" if self.guardrail else "secondary"


class Assignment(models.Model):
    """A unit's variant in an experiment: computed once, then read (sticky)."""

    class Source(models.TextChoices):
        API = "api", "The assign endpoint"
        TURN = "turn", "A conversation turn"

    id = models.BigAutoField(primary_key=True)
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="assignments")
    variant = models.ForeignKey(Variant, on_delete=models.CASCADE, related_name="assignments")
    unit_id = models.CharField(max_length=200)
    attributes = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["experiment", "id"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "unit_id"], name="assignment_unique_unit")
        ]
        indexes = [models.Index(fields=["unit_id"], name="assignment_unit")]

    def __str__(self) -> str:
        return f"{self.unit_id} -> {self.variant_id}"


class MetricEvent(models.Model):
    class Source(models.TextChoices):
        TURN = "turn", "A conversation turn"
        FEEDBACK = "feedback", "Feedback on a reply"
        CLIENT = "client", "Posted by a client"

    id = models.BigAutoField(primary_key=True)
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="events")
    variant = models.ForeignKey(Variant, on_delete=models.CASCADE, related_name="events")
    assignment = models.ForeignKey(Assignment, on_delete=models.CASCADE, related_name="events")
    metric = models.CharField(max_length=64)
    value = models.FloatField()
    source = models.CharField(max_length=10, choices=Source.choices)
    # The reply the event is about (turns and feedback): one event per reply and metric, so a
    # new rating replaces the last.
    message_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "metric", "message_id"],
                condition=Q(message_id__isnull=False),
                name="metric_event_one_per_reply",
            )
        ]
        indexes = [
            models.Index(fields=["experiment", "metric", "assignment"], name="metric_event_unit"),
            models.Index(fields=["experiment", "metric", "created_at"], name="metric_event_time"),
        ]

    def __str__(self) -> str:
        return f"{self.metric}={self.value}"


class Exposure(models.Model):
    """A reply written under a variant: which experiments shaped it (feedback on it is
    recorded for them; the admin and the reply's metadata show them)."""

    id = models.BigAutoField(primary_key=True)
    # Not a foreign key: conversations sit above experiments, and the record outlives them.
    message_id = models.UUIDField()
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="exposures")
    variant = models.ForeignKey(Variant, on_delete=models.CASCADE, related_name="exposures")
    assignment = models.ForeignKey(Assignment, on_delete=models.CASCADE, related_name="exposures")
    # The configuration the reply was written with (the variant's, as applied).
    configuration = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["message_id", "experiment"], name="exposure_one_per_reply"
            )
        ]

    def __str__(self) -> str:
        return f"{self.message_id} @ {self.variant_id}"


class ExperimentAlert(models.Model):
    """Something an operator must know: a guardrail degraded and paused the experiment."""

    class Kind(models.TextChoices):
        GUARDRAIL = "guardrail", "A guardrail metric degraded"

    id = models.BigAutoField(primary_key=True)
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="alerts")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    metric = models.CharField(max_length=64)
    variant = models.CharField(max_length=64)
    message = models.TextField()
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind}: {self.metric} / {self.variant}"
