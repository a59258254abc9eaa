from __future__ import annotations

import os
from importlib import import_module

from django.apps import AppConfig
from django.conf import settings


class JobsConfig(AppConfig):
    """The prioritized job queue on django-q2 (see jobs.services for the design)."""

    name = "jobs"
    verbose_name = "Jobs"

    def ready(self) -> None:
        from django.utils.module_loading import autodiscover_modules
        from django_q.signals import pre_execute

        from core.probes import probe_register
        from jobs import events, queues, worker  # noqa: F401  (events: the registry's job.* types)

        # Every app registers its job handlers and maintenance steps in its tasks.py.
        autodiscover_modules("tasks")
        for module in settings.JOBS_HANDLER_MODULES:
            import_module(module)

        def remember_task_id(sender: object, task: dict, **kwargs: object) -> None:
            worker.current_q_task_id = str(task.get("id", ""))

        pre_execute.connect(remember_task_id, dispatch_uid="jobs.remember_task_id", weak=False)
        # The cluster's queues must survive a SIGKILLed reader or writer (see jobs.queues).
        queues.install()
        os.register_at_fork(before=close_database_pools)
        # The ORM broker's queue lives in PostgreSQL; a Redis broker's does not.
        probe_register("queue", broker_reachable, needs_database=lambda: not settings.REDIS_URL)
        probe_register("jobs", jobs_flowing)


def broker_reachable() -> None:
    from django_q.brokers import get_broker

    # queue_size() really talks to the broker (a COUNT on the ORM queue, LLEN on Redis);
    # the ORM broker's ping() is a constant True.
    get_broker().queue_size()


def jobs_flowing() -> None:
    from jobs.selectors import queue_wedged

    wedged = queue_wedged()
    if wedged:
        raise RuntimeError(wedged)


def close_database_pools() -> None:
    """Before os.fork: django-q2 forks its pusher, monitor and workers from a process that
    holds pooled connections, and a child using its parent's socket corrupts both sessions
    ("the last operation didn't produce records"). Children start with no pool instead."""
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        connection.close()
        pools = getattr(type(connection), "_connection_pools", {})
        if connection.alias in pools:
            connection.close_pool()
