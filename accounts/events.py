"""The events of the accounts app: users (emitted by accounts.signals on every save)."""

from __future__ import annotations

from core.events import DATETIME, STRING, event_type_register, object_schema

# The user fields an event carries; a save that touches none of them (a sign-in's
# last_login) is not an update anyone is told about.
USER_EVENT_FIELDS = ("username", "email", "first_name", "last_name", "is_active", "is_staff")


def _user(**extra: object) -> dict[str, object]:
    return object_schema(
        {
            "id": {"type": "integer"},
            "username": STRING,
            "email": STRING,
            "first_name": STRING,
            "last_name": STRING,
            "is_active": {"type": "boolean"},
            "is_staff": {"type": "boolean"},
            "date_joined": DATETIME,
            **extra,
        }
    )


event_type_register(
    "user.registered",
    schema=_user(),
    description="A user account was created (API, admin, or a management command).",
)
event_type_register(
    "user.updated",
    schema=_user(
        fields={
            "type": ["array", "null"],
            "items": {"enum": list(USER_EVENT_FIELDS)},
            "description": "The fields the change saved; null when the whole user was saved.",
        }
    ),
    description="A user's account changed (name, email, active, staff).",
)


def user_event_data(user: object) -> dict[str, object]:
    return {
        "id": user.pk,  # type: ignore[attr-defined]
        **{name: getattr(user, name) for name in USER_EVENT_FIELDS},
        "date_joined": user.date_joined,  # type: ignore[attr-defined]
    }
