"""Writes for conversations, by responsibility: thread settings and claims (threads), create,
update, delete and feedback (crud), turns (turns), streamed turns (streaming), summaries
(summaries), branch and fork (copies). Callers import from here."""

from conversations.services.agent_turns import agent_binding, approval_decide
from conversations.services.copies import conversation_branch, conversation_fork
from conversations.services.crud import (
    FEEDBACK_RANGES,
    conversation_create,
    conversation_delete,
    conversation_update,
    message_feedback,
)
from conversations.services.streaming import (
    ApprovalRequired,
    Token,
    ToolCallFinished,
    ToolCallStarted,
    TurnEvent,
    TurnFailed,
    TurnFinished,
    TurnStarted,
    message_send,
    message_stream,
    turn_run,
)
from conversations.services.summaries import (
    SUMMARIZATION_HANDLER,
    conversation_summarize,
    summary_schedule_if_due,
)
from conversations.services.threads import (
    EDITABLE_FIELDS,
    conversation_settings_check,
    memory_window,
    relevance_floor,
    run_config,
)
from conversations.services.turns import (
    ConversationDeleted,
    RunTracker,
    Turn,
    turn_abandon,
    turn_begin,
    turn_fail,
    turn_finish,
)

__all__ = [
    "EDITABLE_FIELDS",
    "FEEDBACK_RANGES",
    "SUMMARIZATION_HANDLER",
    "ApprovalRequired",
    "ConversationDeleted",
    "RunTracker",
    "Token",
    "ToolCallFinished",
    "ToolCallStarted",
    "Turn",
    "TurnEvent",
    "TurnFailed",
    "TurnFinished",
    "TurnStarted",
    "agent_binding",
    "approval_decide",
    "conversation_branch",
    "conversation_create",
    "conversation_delete",
    "conversation_fork",
    "conversation_settings_check",
    "conversation_summarize",
    "conversation_update",
    "memory_window",
    "message_feedback",
    "message_send",
    "message_stream",
    "relevance_floor",
    "run_config",
    "summary_schedule_if_due",
    "turn_abandon",
    "turn_begin",
    "turn_fail",
    "turn_finish",
    "turn_run",
]
