"""Each API route declares its policy (rate-limit class, uploads) next to its view."""

from __future__ import annotations

from django.core.management import call_command

from web import http_policy
from web.http_policy import RoutePolicy, api_route_policies, route_policy

# Every API operation whose policy is not the default (rate class "default", no uploads).
# A new route lands in the default class until it declares otherwise: adding it to this
# table, or to the default's, is the decision this test asks for.
DECLARED = {
    ("POST", "api/v1/conversations/<uuid:pk>/messages/"): ("expensive", False),
    ("POST", "api/v1/conversations/<conversation_id>/messages/stream/"): ("expensive", False),
    # Deciding resumes the paused turn: the model runs again.
    ("POST", "api/v1/conversations/<uuid:pk>/approvals/<uuid:approval_id>/"): ("expensive", False),
    ("POST", "api/v1/documents/"): ("expensive", True),
    ("POST", "api/v1/documents/<uuid:pk>/reprocess/"): ("expensive", False),
    ("GET", "api/v1/documents/<uuid:pk>/similar/"): ("expensive", False),
    ("POST", "api/v1/knowledge/search/"): ("expensive", False),
    ("POST", "api/v1/knowledge/metadata-query/"): ("expensive", False),
    ("POST", "api/v1/agents/route/"): ("expensive", False),
    # The OpenAI-compatible API: a completion runs the agent's model (and its tools).
    ("POST", "api/openai/v1/chat/completions"): ("expensive", False),
    # A test send makes the outbound request while the client waits.
    ("POST", "api/v1/webhooks/endpoints/<uuid:pk>/test/"): ("expensive", False),
    # A wheel upload: up to CHATTER_MAX_UPLOAD_BYTES reach the view, which refuses more than
    # CHATTER_PLUGIN_MAX_WHEEL_BYTES in the envelope.
    ("POST", "api/v1/plugins/install/"): ("default", True),
    ("GET", "api/v1/health/"): (None, False),
    ("GET", "api/v1/ready/"): (None, False),
}
DEFAULT = {
    ("GET", "api/v1/"),
    ("GET", "api/v1/api-keys/"),
    ("POST", "api/v1/api-keys/"),
    ("GET", "api/v1/api-keys/<uuid:pk>/"),
    ("POST", "api/v1/api-keys/<uuid:pk>/revoke/"),
    ("GET", "api/v1/conversations/"),
    ("POST", "api/v1/conversations/"),
    ("GET", "api/v1/conversations/<uuid:pk>/"),
    ("PUT", "api/v1/conversations/<uuid:pk>/"),
    ("PATCH", "api/v1/conversations/<uuid:pk>/"),
    ("DELETE", "api/v1/conversations/<uuid:pk>/"),
    ("POST", "api/v1/conversations/<uuid:pk>/branch/"),
    ("POST", "api/v1/conversations/<uuid:pk>/fork/"),
    ("GET", "api/v1/conversations/<uuid:pk>/messages/"),
    ("GET", "api/v1/conversations/<uuid:pk>/approvals/"),
    ("GET", "api/v1/approvals/"),
    ("GET", "api/v1/jobs/"),
    ("POST", "api/v1/jobs/"),
    ("GET", "api/v1/jobs/stats/"),
    ("GET", "api/v1/jobs/<int:pk>/"),
    ("POST", "api/v1/jobs/<int:pk>/cancel/"),
    ("POST", "api/v1/jobs/<int:pk>/retry/"),
    ("GET", "api/v1/documents/"),
    ("GET", "api/v1/documents/<uuid:pk>/"),
    ("DELETE", "api/v1/documents/<uuid:pk>/"),
    ("GET", "api/v1/documents/<uuid:pk>/chunks/"),
    ("POST", "api/v1/messages/<uuid:message_id>/feedback/"),
    ("GET", "api/v1/usage/"),
    ("GET", "api/v1/security/events/"),
    ("GET", "api/v1/whoami/"),
    ("GET", "api/v1/agents/"),
    ("POST", "api/v1/agents/"),
    ("GET", "api/v1/agents/tools/"),
    ("GET", "api/v1/agents/types/"),
    ("GET", "api/v1/agents/<uuid:pk>/"),
    ("PUT", "api/v1/agents/<uuid:pk>/"),
    ("PATCH", "api/v1/agents/<uuid:pk>/"),
    ("DELETE", "api/v1/agents/<uuid:pk>/"),
    ("GET", "api/v1/agents/<uuid:pk>/prompt-history/"),
    ("GET", "api/v1/agents/<uuid:pk>/variants/"),
    ("POST", "api/v1/agents/<uuid:pk>/variants/"),
    ("GET", "api/v1/agents/<uuid:pk>/variants/<uuid:variant_id>/"),
    ("PATCH", "api/v1/agents/<uuid:pk>/variants/<uuid:variant_id>/"),
    ("DELETE", "api/v1/agents/<uuid:pk>/variants/<uuid:variant_id>/"),
    ("GET", "api/v1/agents/<uuid:pk>/variant-choices/"),
    ("GET", "api/v1/agents/<uuid:pk>/interactions/"),
    ("GET", "api/v1/agents/<uuid:pk>/metrics/"),
    ("GET", "api/openai/v1/"),  # Ninja's root: 404, no docs here
    ("GET", "api/openai/v1/models"),
    ("GET", "api/openai/v1/models/<model>"),
    ("GET", "api/v1/exports/"),
    ("POST", "api/v1/exports/"),
    ("GET", "api/v1/exports/<uuid:pk>/"),
    ("GET", "api/v1/exports/<uuid:pk>/download/"),
    ("GET", "api/v1/backups/"),
    ("POST", "api/v1/backups/"),
    ("GET", "api/v1/backups/<uuid:pk>/"),
    ("POST", "api/v1/backups/<uuid:pk>/restore/"),
    ("GET", "api/v1/restores/"),
    ("GET", "api/v1/restores/<uuid:pk>/"),
    ("GET", "api/v1/retention-policies/"),
    ("POST", "api/v1/retention-policies/"),
    ("GET", "api/v1/retention-policies/<uuid:pk>/"),
    ("PUT", "api/v1/retention-policies/<uuid:pk>/"),
    ("PATCH", "api/v1/retention-policies/<uuid:pk>/"),
    ("DELETE", "api/v1/retention-policies/<uuid:pk>/"),
    ("GET", "api/v1/retention-policies/<uuid:pk>/preview/"),
    ("POST", "api/v1/retention-policies/<uuid:pk>/purge/"),
    ("POST", "api/v1/bulk-operations/"),
    ("GET", "api/v1/experiments/"),
    ("POST", "api/v1/experiments/"),
    ("GET", "api/v1/experiments/<uuid:pk>/"),
    ("PATCH", "api/v1/experiments/<uuid:pk>/"),
    ("DELETE", "api/v1/experiments/<uuid:pk>/"),
    ("POST", "api/v1/experiments/<uuid:pk>/start/"),
    ("POST", "api/v1/experiments/<uuid:pk>/pause/"),
    ("POST", "api/v1/experiments/<uuid:pk>/complete/"),
    ("POST", "api/v1/experiments/<uuid:pk>/cancel/"),
    ("POST", "api/v1/experiments/<uuid:pk>/assign/"),
    ("POST", "api/v1/experiments/<uuid:pk>/events/"),
    ("GET", "api/v1/experiments/<uuid:pk>/results/"),
    ("GET", "api/v1/webhooks/endpoints/"),
    ("POST", "api/v1/webhooks/endpoints/"),
    ("GET", "api/v1/webhooks/endpoints/<uuid:pk>/"),
    ("PUT", "api/v1/webhooks/endpoints/<uuid:pk>/"),
    ("PATCH", "api/v1/webhooks/endpoints/<uuid:pk>/"),
    ("DELETE", "api/v1/webhooks/endpoints/<uuid:pk>/"),
    ("POST", "api/v1/webhooks/endpoints/<uuid:pk>/rotate-secret/"),
    ("POST", "api/v1/webhooks/endpoints/<uuid:pk>/redeliver-failed/"),
    ("GET", "api/v1/webhooks/deliveries/"),
    ("GET", "api/v1/webhooks/deliveries/<uuid:pk>/"),
    ("POST", "api/v1/webhooks/deliveries/<uuid:pk>/redeliver/"),
    ("GET", "api/v1/webhooks/event-types/"),
    ("GET", "api/v1/plugins/"),
    ("GET", "api/v1/plugins/health/"),
    ("GET", "api/v1/plugins/<uuid:pk>/"),
    ("POST", "api/v1/plugins/<uuid:pk>/enable/"),
    ("POST", "api/v1/plugins/<uuid:pk>/disable/"),
    ("POST", "api/v1/plugins/<uuid:pk>/configure/"),
    ("POST", "api/v1/plugins/<uuid:pk>/uninstall/"),
    # Plugins' own routes (outside the schema): every method, the default class.
    *{
        (method, route)
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
        for route in (
            "api/v1/plugins/<plugin_name:name>/",
            "api/v1/plugins/<plugin_name:name>/<path:path>",
        )
    },
    ("GET", "api/schema/"),
    ("GET", "api/docs/"),
}


def test_every_api_operation_has_the_policy_it_should():
    found = {
        (method, route): (policy.rate, policy.uploads)
        for route, method, _, policy in api_route_policies()
    }

    assert {k: v for k, v in found.items() if v != ("default", False)} == DECLARED
    assert {k for k, v in found.items() if v == ("default", False)} == DEFAULT


def test_the_system_check_passes():
    assert http_policy.check_route_policies() == []
    call_command("check")  # raises SystemCheckError on any error


def test_a_policy_no_route_reaches_is_a_check_error(monkeypatch):
    monkeypatch.setattr(http_policy, "declared_policies", [])

    @route_policy(rate="expensive")
    def not_a_view() -> None: ...

    errors = http_policy.check_route_policies()

    assert [error.id for error in errors] == ["chatter.E102"]
    assert "not_a_view" in errors[0].msg


def test_an_unknown_rate_class_is_a_check_error(monkeypatch, settings):
    settings.CHATTER_RATE_LIMITS = {"default": "600/m"}

    errors = http_policy.check_route_policies()

    assert {error.id for error in errors} == {"chatter.E101"}
    assert len(errors) == sum(1 for rate, _ in DECLARED.values() if rate == "expensive")


def test_a_declaration_covers_only_the_methods_it_names():
    policy = RoutePolicy(rate="expensive", methods=frozenset({"POST"}))

    assert policy.covers("post") and not policy.covers("GET")
    assert RoutePolicy().covers("DELETE")
