"""Sign-ins are security-relevant; Django reports them only through these signals."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver

from accounts.services import log_action


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
