"""Experiments API (DRF): CRUD, the lifecycle actions (start, pause, complete, cancel),
assigning a unit, posting a metric event, and the results."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.validators import RegexValidator
from django.db import transaction
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from agents.selectors import agent_list
from agents.services import agent_update
from core.errors import ApplicationError, NotFound
from core.validation import (
    MetadataField,
    RejectUnknownFields,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    StrictTextField,
    require_json_body,
)
from experiments import rules
from experiments.assignment import OPERATORS
from experiments.models import Experiment, Metric, MetricEvent
from experiments.selectors import (
    effective_traffic,
    experiment_get,
    experiment_list,
    experiment_results,
)
from experiments.services import (
    experiment_assign,
    experiment_cancel,
    experiment_complete,
    experiment_create,
    experiment_delete,
    experiment_pause,
    experiment_start,
    experiment_update,
    metric_event_record,
)


class StrictBooleanField(serializers.BooleanField):
    """JSON true/false only: DRF's own would read "yes", 1 and "on" as true."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


def _name_exact(value: str) -> str:
    return value  # the pattern validator below is the rule; nothing is normalized into a name


class NameField(StrictCharField):
    """A key or name: lowercase letters, digits and single - or _ between them."""

    rule = staticmethod(_name_exact)
    visible = rules.NAME_PATTERN

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        kwargs.setdefault("max_length", 64)
        super().__init__(**kwargs)
        self.validators.append(
            RegexValidator(rules.NAME_PATTERN, "Lowercase letters, digits and single - or _.")
        )


class VariantModelField(StrictCharField):
    """`provider:model`: a provider this deployment can reach."""


class VariantModelFieldSchema(OpenApiSerializerFieldExtension):
    target_class = VariantModelField

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        return (
            {**schema, "pattern": rules.model_spec_pattern()} if direction == "request" else schema
        )


class VariantConfigurationSerializer(RejectUnknownFields, serializers.Serializer):
    """What a variant changes in a turn, only the keys of its experiment's type: prompt
    (system_prompt), model (model), parameter (temperature, max_tokens), workflow
    (workflow). Empty: the turn as it is (a control usually is)."""

    system_prompt = StrictTextField(required=False, allow_blank=True, max_length=20_000)
    model = VariantModelField(required=False, max_length=200)
    temperature = StrictFloatField(required=False, min_value=0, max_value=2)
    max_tokens = StrictIntegerField(required=False, min_value=1, max_value=200_000)
    workflow = serializers.ChoiceField(choices=list(rules.WORKFLOWS), required=False)


class VariantSerializer(RejectUnknownFields, serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = NameField()
    is_control = StrictBooleanField(required=False, default=False)
    weight = StrictFloatField(
        required=False,
        default=1.0,
        min_value=0,
        max_value=1_000_000,
        help_text="The variant's share (weighted, ramp and targeted allocations).",
    )
    configuration = VariantConfigurationSerializer(required=False)


class MetricSerializer(RejectUnknownFields, serializers.Serializer):
    name = NameField()
    type = serializers.ChoiceField(choices=Metric.Type.choices)
    aggregation = serializers.ChoiceField(
        choices=Metric.Aggregation.choices,
        required=False,
        help_text="How a unit's events fold into its value; default: sum for engagement, "
        "max for conversion (which must be max), else mean.",
    )
    direction = serializers.ChoiceField(
        choices=Metric.Direction.choices,
        required=False,
        help_text="Default: decrease for response_time, error_rate, token_usage and cost.",
    )
    primary = StrictBooleanField(required=False, default=False)
    guardrail = StrictBooleanField(required=False, default=False)
    minimum_detectable_effect = StrictFloatField(
        required=False, default=0.05, min_value=0.0001, max_value=10
    )
    guardrail_threshold = StrictFloatField(required=False, default=0.0, min_value=0, max_value=10)
    role = serializers.CharField(read_only=True, help_text="primary, secondary or guardrail.")


class TargetingRuleSerializer(RejectUnknownFields, serializers.Serializer):
    attribute = StrictCharField(max_length=64)
    operator = serializers.ChoiceField(choices=list(OPERATORS))
    value = serializers.JSONField(
        required=False,
        allow_null=True,
        default=None,
        help_text="in/not_in: a list; exists: true or false.",
    )


class RampStepSerializer(RejectUnknownFields, serializers.Serializer):
    hours = StrictFloatField(min_value=0, max_value=24 * 366, help_text="After the start.")
    traffic_percentage = StrictFloatField(min_value=0, max_value=100)


class ExperimentSerializer(RejectUnknownFields, serializers.ModelSerializer):
    name = StrictCharField(max_length=200)
    key = NameField(help_text="Hashed with each unit's id; unique among your experiments.")
    description = StrictTextField(required=False, allow_blank=True, max_length=10_000)
    type = serializers.ChoiceField(choices=Experiment.Type.choices)
    allocation = serializers.ChoiceField(choices=Experiment.Allocation.choices, required=False)
    traffic_percentage = StrictFloatField(required=False, min_value=0, max_value=100)
    effective_traffic_percentage = serializers.SerializerMethodField(
        help_text="The share of units included now (a ramp's current step)."
    )
    ramp_schedule = RampStepSerializer(many=True, required=False, max_length=rules.MAX_RAMP_STEPS)
    targeting = TargetingRuleSerializer(many=True, required=False, max_length=rules.MAX_RULES)
    agent = serializers.UUIDField(
        source="agent_id",
        required=False,
        allow_null=True,
        help_text="The agent whose conversations' turns it covers; null: conversations "
        "without an agent.",
    )
    confidence_level = StrictFloatField(required=False, min_value=0.5, max_value=0.999)
    start_at = serializers.DateTimeField(required=False, allow_null=True)
    end_at = serializers.DateTimeField(required=False, allow_null=True)
    variants = VariantSerializer(many=True, required=False, max_length=rules.MAX_VARIANTS)
    metrics = MetricSerializer(many=True, required=False, max_length=rules.MAX_METRICS)
    winner = serializers.CharField(
        source="winner.name", read_only=True, allow_null=True, default=None
    )
    owner = serializers.CharField(source="owner.username", read_only=True)

    class Meta:
        model = Experiment
        fields = [
            "id",
            "name",
            "key",
            "description",
            "type",
            "status",
            "allocation",
            "traffic_percentage",
            "effective_traffic_percentage",
            "ramp_schedule",
            "targeting",
            "agent",
            "confidence_level",
            "start_at",
            "end_at",
            "variants",
            "metrics",
            "winner",
            "promoted_to",
            "owner",
            "started_at",
            "paused_at",
            "completed_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "id",
            "status",
            "promoted_to",
            "started_at",
            "paused_at",
            "completed_at",
            "created_at",
            "updated_at",
        ]

    def get_effective_traffic_percentage(self, experiment: Experiment) -> float:
        return effective_traffic(experiment)


def _plain(value: Any) -> Any:
    """Validated data as plain dicts and lists (the service's input)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _service_fields(data: dict[str, Any]) -> dict[str, Any]:
    return _plain(dict(data))


def _check_agent(request: Request, agent_id: Any) -> None:
    if agent_id is not None and not agent_list(user=request.user).filter(pk=agent_id).exists():
        # 404, as for any id of someone else's: the agent may exist, but not for this user.
        raise NotFound(
            "No agent you may use has this id.",
            code="unknown_agent",
            details={"agent": ["The id of an agent you may use, or null."]},
        )


class CompleteSerializer(RejectUnknownFields, serializers.Serializer):
    winner = NameField(help_text="The winning variant's name.")
    promote = serializers.ChoiceField(
        choices=[("", "Not promoted"), ("agent", "To the agent"), ("defaults", "As the default")],
        required=False,
        default="",
        help_text="agent: write the winner's configuration into the experiment's agent; "
        "defaults: keep serving it to every turn the experiment covered.",
    )


class AssignSerializer(RejectUnknownFields, serializers.Serializer):
    user_id = StrictCharField(max_length=200, help_text="The unit: any stable id of yours.")
    attributes = MetadataField(
        required=False, default=dict, help_text="What targeting rules are matched against."
    )


AssignResponse = inline_serializer(
    "ExperimentAssignment",
    {
        "user_id": serializers.CharField(),
        "variant": inline_serializer(
            "ExperimentAssignedVariant",
            {
                "name": serializers.CharField(),
                "is_control": serializers.BooleanField(),
                "configuration": serializers.DictField(),
            },
            allow_null=True,
            help_text="Null: the unit is not in the experiment (see reason).",
        ),
        "reason": serializers.ChoiceField(
            choices=["assigned", "existing", "not_started", "ended", "targeting", "traffic"],
            help_text="assigned now, existing (sticky), or why the unit is left out.",
        ),
    },
)


class EventSerializer(RejectUnknownFields, serializers.Serializer):
    user_id = StrictCharField(max_length=200, help_text="An assigned unit.")
    metric = NameField(help_text="One of the experiment's metrics.")
    value = StrictFloatField(min_value=-1e15, max_value=1e15, help_text="A conversion: 0 or 1.")


class EventResponseSerializer(serializers.ModelSerializer):
    user_id = serializers.CharField(source="assignment.unit_id")
    variant = serializers.CharField(source="variant.name")

    class Meta:
        model = MetricEvent
        fields = ["id", "user_id", "variant", "metric", "value", "source", "created_at"]
        read_only_fields = fields


_NULLABLE = {"allow_null": True}
ResultsResponse = inline_serializer(
    "ExperimentResults",
    {
        "experiment": inline_serializer(
            "ExperimentResultsExperiment",
            {
                "id": serializers.UUIDField(),
                "key": serializers.CharField(),
                "name": serializers.CharField(),
                "type": serializers.CharField(),
                "status": serializers.CharField(),
                "winner": serializers.CharField(allow_null=True),
            },
        ),
        "confidence_level": serializers.FloatField(),
        "traffic_percentage": serializers.FloatField(),
        "units": serializers.IntegerField(),
        "variants": inline_serializer(
            "ExperimentResultsVariant",
            {
                "name": serializers.CharField(),
                "is_control": serializers.BooleanField(),
                "weight": serializers.FloatField(),
                "units": serializers.IntegerField(),
                "configuration": serializers.DictField(),
            },
            many=True,
        ),
        "srm": inline_serializer(
            "ExperimentSrm",
            {
                "chi_square": serializers.FloatField(),
                "p_value": serializers.FloatField(),
                "threshold": serializers.FloatField(),
                "flagged": serializers.BooleanField(
                    help_text="p < threshold: the split is not what the weights promise."
                ),
                "observed": serializers.DictField(child=serializers.IntegerField()),
                "expected": serializers.DictField(child=serializers.FloatField()),
            },
        ),
        "metrics": inline_serializer(
            "ExperimentMetricResults",
            {
                "name": serializers.CharField(),
                "type": serializers.CharField(),
                "role": serializers.CharField(),
                "direction": serializers.CharField(),
                "aggregation": serializers.CharField(),
                "kind": serializers.ChoiceField(choices=["mean", "binomial"]),
                "minimum_detectable_effect": serializers.FloatField(),
                "guardrail_threshold": serializers.FloatField(),
                "sample_size_per_variant": serializers.IntegerField(
                    allow_null=True, help_text="Units per arm for 80% power at the MDE."
                ),
                "variants": inline_serializer(
                    "ExperimentMetricVariant",
                    {
                        "variant": serializers.CharField(),
                        "is_control": serializers.BooleanField(),
                        "count": serializers.IntegerField(),
                        "mean": serializers.FloatField(**_NULLABLE),
                        "variance": serializers.FloatField(**_NULLABLE),
                        "lift": serializers.FloatField(
                            help_text="Relative: treatment / control - 1.", **_NULLABLE
                        ),
                        "absolute_lift": serializers.FloatField(**_NULLABLE),
                        "ci_low": serializers.FloatField(**_NULLABLE),
                        "ci_high": serializers.FloatField(**_NULLABLE),
                        "sequential_ci_low": serializers.FloatField(
                            help_text="Always valid: safe to read at every look.", **_NULLABLE
                        ),
                        "sequential_ci_high": serializers.FloatField(**_NULLABLE),
                        "p_value": serializers.FloatField(**_NULLABLE),
                        "p_value_holm": serializers.FloatField(**_NULLABLE),
                        "significant": serializers.BooleanField(**_NULLABLE),
                        "chance_to_beat_control": serializers.FloatField(**_NULLABLE),
                        "expected_loss": serializers.FloatField(**_NULLABLE),
                        "power": serializers.FloatField(**_NULLABLE),
                    },
                    many=True,
                ),
            },
            many=True,
        ),
        "alerts": inline_serializer(
            "ExperimentAlertEntry",
            {
                "kind": serializers.CharField(),
                "metric": serializers.CharField(),
                "variant": serializers.CharField(),
                "message": serializers.CharField(),
                "created_at": serializers.DateTimeField(),
            },
            many=True,
        ),
    },
)


class ExperimentViewSet(
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.ListModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Your experiments (staff: every one). Others' ids are 404."""

    serializer_class = ExperimentSerializer
    parser_classes = [JSONParser]
    lookup_value_converter = "uuid"
    http_method_names = ["get", "post", "patch", "delete"]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if request.method in ("POST", "PATCH") and self.action is not None:
            require_json_body(request)

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return Experiment.objects.none()
        return experiment_list(user=self.request.user)

    def get_object(self) -> Experiment:
        return experiment_get(user=self.request.user, experiment_id=self.kwargs["pk"])

    def _respond(self, experiment: Experiment, code: int = status.HTTP_200_OK) -> Response:
        fresh = experiment_get(user=self.request.user, experiment_id=experiment.pk)
        return Response(ExperimentSerializer(fresh).data, status=code)

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        payload = ExperimentSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        fields = _service_fields(payload.validated_data)
        _check_agent(request, fields.get("agent_id"))
        experiment = experiment_create(owner=request.user, **fields)
        return self._respond(experiment, status.HTTP_201_CREATED)

    @extend_schema(
        description="A draft changes freely (given variants or metrics replace the lists). "
        "Once started, variants, metrics, key, type, allocation, targeting and agent are "
        "frozen (409 experiment_frozen); once ended, only name and description change."
    )
    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        experiment = self.get_object()
        payload = ExperimentSerializer(experiment, data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        fields = _service_fields(payload.validated_data)
        if "agent_id" in fields and fields["agent_id"] != experiment.agent_id:
            _check_agent(request, fields["agent_id"])
        experiment = experiment_update(experiment=experiment, actor=request.user, **fields)
        return self._respond(experiment)

    @extend_schema(
        description="Deletes a draft or an ended experiment with its assignments and "
        "events; a running or paused one is completed or cancelled first (409)."
    )
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        experiment_delete(experiment=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    # --- lifecycle -------------------------------------------------------------------------
    @extend_schema(
        request=None,
        responses={200: ExperimentSerializer},
        description="draft -> running (409 not_ready without two variants, one the control, "
        "and one primary metric), or paused -> running. 409 invalid_transition otherwise.",
    )
    @action(detail=True, methods=["post"])
    def start(self, request: Request, pk: str | None = None) -> Response:
        return self._respond(experiment_start(experiment=self.get_object(), actor=request.user))

    @extend_schema(
        request=None,
        responses={200: ExperimentSerializer},
        description="running -> paused: no unit is assigned and no turn changed until it is "
        "started again. 409 invalid_transition otherwise.",
    )
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str | None = None) -> Response:
        return self._respond(experiment_pause(experiment=self.get_object(), actor=request.user))

    @extend_schema(
        request=CompleteSerializer,
        responses={200: ExperimentSerializer},
        description="running or paused -> completed, with the winning variant; promote "
        "`agent` writes its configuration into the agent (its owner or staff only: 403), "
        "`defaults` keeps serving it to every turn the experiment covered.",
    )
    @action(detail=True, methods=["post"])
    def complete(self, request: Request, pk: str | None = None) -> Response:
        experiment = self.get_object()
        payload = CompleteSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        winner, promote = payload.validated_data["winner"], payload.validated_data["promote"]
        with transaction.atomic():
            experiment = experiment_complete(
                experiment=experiment, actor=request.user, winner=winner, promote=promote
            )
            if promote == Experiment.Promotion.AGENT:
                _promote_to_agent(request, experiment)
        return self._respond(experiment)

    @extend_schema(
        request=None,
        responses={200: ExperimentSerializer},
        description="draft, running or paused -> cancelled (no winner).",
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        return self._respond(experiment_cancel(experiment=self.get_object(), actor=request.user))

    # --- units and events ------------------------------------------------------------------
    @extend_schema(
        request=AssignSerializer,
        responses={200: AssignResponse},
        description="The unit's sticky variant in a running experiment (409 otherwise): "
        "stored the first time, read back after; null when its attributes miss the "
        "targeting or its hash falls outside the traffic share.",
    )
    @action(detail=True, methods=["post"])
    def assign(self, request: Request, pk: str | None = None) -> Response:
        experiment = self.get_object()
        payload = AssignSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        outcome = experiment_assign(
            experiment=experiment,
            unit_id=payload.validated_data["user_id"],
            attributes=payload.validated_data["attributes"],
        )
        variant = outcome.variant
        return Response(
            {
                "user_id": payload.validated_data["user_id"],
                "variant": None
                if variant is None
                else {
                    "name": variant.name,
                    "is_control": variant.is_control,
                    "configuration": variant.configuration,
                },
                "reason": outcome.reason,
            }
        )

    @extend_schema(
        request=EventSerializer,
        responses={201: EventResponseSerializer},
        description="A metric event for an assigned unit (400 not_assigned otherwise), while "
        "the experiment runs or is paused (409 otherwise). Turns record response_time, "
        "token_usage, cost, error_rate and engagement, and feedback user_satisfaction, "
        "by themselves.",
    )
    @action(detail=True, methods=["post"])
    def events(self, request: Request, pk: str | None = None) -> Response:
        experiment = self.get_object()
        payload = EventSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        event = metric_event_record(
            experiment=experiment,
            unit_id=payload.validated_data["user_id"],
            metric=payload.validated_data["metric"],
            value=payload.validated_data["value"],
        )
        event = MetricEvent.objects.select_related("assignment", "variant").get(pk=event.pk)
        return Response(EventResponseSerializer(event).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        responses={200: ResultsResponse},
        description="Per metric and variant against control, computed now: units, mean, "
        "variance, relative lift with its delta-method interval and its always-valid "
        "sequential interval (safe to read every day), p-value (Welch; two-proportion z "
        "for conversions) and its Holm adjustment across all metrics and variants, chance "
        "to beat control, expected loss, power and the units needed at the metric's "
        "minimum detectable effect; a sample-ratio-mismatch check (flagged at p < 0.001).",
    )
    @action(detail=True, methods=["get"])
    def results(self, request: Request, pk: str | None = None) -> Response:
        return Response(experiment_results(experiment=self.get_object()))


AGENT_FIELDS = ("system_prompt", "model", "temperature", "max_tokens")


def _promote_to_agent(request: Request, experiment: Experiment) -> None:
    """The winner's configuration into the experiment's agent (agents sit above
    experiments: the interface writes it, inside the completion's transaction)."""
    agent = agent_list(user=request.user).filter(pk=experiment.agent_id).first()
    if agent is None:
        raise NotFound("The experiment's agent no longer exists.", code="unknown_agent")
    configuration = experiment.winner.configuration if experiment.winner else {}
    fields = {k: v for k, v in configuration.items() if k in AGENT_FIELDS}
    if not fields:
        raise ApplicationError(
            "The winner changes nothing an agent holds (its prompt, model or parameters).",
            code="validation_error",
            details={"promote": ["Nothing to write into the agent."]},
        )
    agent_update(agent=agent, actor=request.user, **fields)
