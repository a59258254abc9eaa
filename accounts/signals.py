"""Sign-ins are security-relevant; Django reports them only through these signals. Users
are saved by Django itself (the admin, createsuperuser) as well as by services, so their
events come from post_save too: User.save wraps the save and this receiver in one
transaction."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.db.models.signals import post_save
from django.dispatch import receiver

from accounts.events import USER_EVENT_FIELDS, user_event_data
from accounts.models import User
from accounts.services import log_action
from core.events import event_emit


@receiver(post_save, sender=User, dispatch_uid="accounts.user_events")
def user_events(
    sender: Any, instance: User, created: bool, update_fields: Any = None, **kwargs: Any
) -> None:
    if kwargs.get("raw"):  # fixtures being loaded
        return
    data = user_event_data(instance)
    if created:
        event_emit(type="user.registered", data=data, owner_id=instance.pk)
        return
    fields = None if update_fields is None else sorted(set(update_fields) & set(USER_EVENT_FIELDS))
    if fields == []:
        return
    event_emit(type="user.updated", data={**data, "fields": fields}, owner_id=instance.pk)


@receiver(user_logged_in, dispatch_uid="accounts.audit_login")
def audit_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    log_action(actor=user, action="auth.login", request=request)


@receiver(user_login_failed, dispatch_uid="accounts.audit_login_failed")
def audit_login_failed(
    sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any
) -> None:
    log_action(
        actor=None,
        action="auth.login_failed",
        details={"username": str(credentials.get("username", ""))[:150]},
        request=request,
    )
