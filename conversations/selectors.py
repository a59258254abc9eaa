"""Reads for conversations: owner-scoped lists, full-text search, usage totals."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib.postgres.search import SearchQuery, SearchVector
from django.db.models import Count, DecimalField, F, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from accounts.models import User
from accounts.selectors import visible_to
from conversations.models import SEARCH_CONFIG, Conversation, Message, ToolApproval
from conversations.pricing import format_cost


def conversation_list(*, user: User, query: str | None = None) -> QuerySet[Conversation]:
    """The user's conversations (staff: all), optionally full-text searched over titles and
    message contents; both sides use their GIN expression indexes."""
    conversations = visible_to(Conversation.objects.select_related("owner"), user)
    if query and query.strip():
        search = SearchQuery(query, search_type="websearch", config=SEARCH_CONFIG)
        in_messages = (
            Message.objects.annotate(document=SearchVector("content", config=SEARCH_CONFIG))
            .filter(document=search)
            .values("conversation_id")
        )
        conversations = conversations.annotate(
            title_document=SearchVector("title", config=SEARCH_CONFIG)
        ).filter(Q(title_document=search) | Q(pk__in=in_messages))
    return conversations.order_by("-updated_at")


def conversation_get(*, user: User, conversation_id: Any) -> Conversation | None:
    return visible_to(Conversation.objects.all(), user).filter(pk=conversation_id).first()


def message_list(*, conversation: Conversation) -> QuerySet[Message]:
    return conversation.messages.order_by("position")


def message_visible(*, user: User, message_id: Any) -> Message | None:
    return (
        visible_to(
            Message.objects.select_related("conversation"), user, owner_field="conversation__owner"
        )
        .filter(pk=message_id)
        .first()
    )


def usage_for(*, user: User) -> dict[str, Any]:
    """Token and cost totals for one user, by model. A cost with any unpriced reply in it
    is unknown (None), and `unpriced_replies` says how many."""
    rows = list(
        Message.objects.filter(conversation__owner=user, role=Message.Role.ASSISTANT)
        .values("model")
        .annotate(
            replies=Count("id"),
            unpriced_replies=Count("id", filter=Q(cost__isnull=True)),
            tokens_in=Sum("tokens_in"),
            tokens_out=Sum("tokens_out"),
            cost=Sum("cost"),
        )
        .order_by("model")
    )
    by_model = [
        {**row, "cost": None if row["unpriced_replies"] else format_cost(row["cost"] or 0)}
        for row in rows
    ]
    totals = Conversation.objects.filter(owner=user).aggregate(
        conversations=Count("id"), tokens_in=Sum("tokens_in"), tokens_out=Sum("tokens_out")
    )
    unpriced = sum(row["unpriced_replies"] for row in by_model)
    known = sum((row["cost"] or Decimal(0) for row in rows), Decimal(0))
    return {
        "user": user.username,
        "conversations": totals["conversations"],
        "tokens_in": totals["tokens_in"] or 0,
        "tokens_out": totals["tokens_out"] or 0,
        "cost": None if unpriced else format_cost(known),
        "unpriced_replies": unpriced,
        "by_model": by_model,
    }


def conversation_tree(*, conversation: Conversation) -> dict[str, Any]:
    """The conversation's family from its root: branches and forks, recursively."""
    root = conversation
    seen = {root.pk}
    while (root.parent_id or root.forked_from_id) and len(seen) < 1000:
        up = root.parent or root.forked_from
        if up is None or up.pk in seen:
            break
        seen.add(up.pk)
        root = up

    def node(item: Conversation, depth: int) -> dict[str, Any]:
        children = list(
            Conversation.objects.filter(Q(parent=item) | Q(forked_from=item)).order_by("created_at")
        )
        return {
            "conversation": item,
            "kind": "branch" if item.parent_id else "fork" if item.forked_from_id else "root",
            "children": [node(child, depth + 1) for child in children] if depth < 20 else [],
        }

    return node(root, 0)


def usage_by_owner() -> dict[str, Any]:
    """Annotations for a User queryset: `_tokens` and `_cost` over each user's conversations.
    Correlated subqueries, so they add to other per-user aggregates without multiplying rows."""
    usage = Conversation.objects.filter(owner=OuterRef("pk")).values("owner")
    return {
        "_tokens": Coalesce(
            Subquery(usage.annotate(t=Sum(F("tokens_in") + F("tokens_out"))).values("t")), 0
        ),
        "_cost": Coalesce(
            Subquery(usage.annotate(c=Sum("cost")).values("c")),
            Value(Decimal(0)),
            output_field=DecimalField(),
        ),
    }


def approval_list(
    *, user: User, conversation: Conversation | None = None, status: str | None = None
) -> QuerySet[ToolApproval]:
    """Tool approvals of the user's conversations (staff: all), newest first."""
    approvals = ToolApproval.objects.select_related("decided_by")
    if not user.is_staff:
        approvals = approvals.filter(conversation__owner=user)
    if conversation is not None:
        approvals = approvals.filter(conversation=conversation)
    if status:
        approvals = approvals.filter(status=status)
    return approvals.order_by("-created_at", "-id")
