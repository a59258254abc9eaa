"""The plugins of this process: loaded from the state in PostgreSQL and kept in step with it.

Every change an operator makes (install, enable, configure, update, disable, uninstall, an
automatic disable) takes a new value of the plugin-state generation in the same
transaction (``plugins.services.state_bump``). Each process remembers the generation it
loaded and compares it with the row, one primary-key read, at the start of each request
(``plugins.middleware``), each job (a jobs prelude) and each batch of events (the
subscriber): when it differs, ``plugins_sync`` reloads what changed. An uploaded plugin's
wheel comes from the database and is unpacked once per machine into
``CHATTER_PLUGIN_DIR`` (content-addressed), which the process appends to ``sys.path``.

Loading a plugin imports its entry point and calls it with a ``PluginRegistrar``; what it
registers is put into the core's registries (tools, workflows, job handlers) or kept here
for the plugins app's own dispatchers (event subscribers, middleware hooks, routes, health
checks). Every call into a plugin goes through ``plugin_call``: exceptions and time budgets
are contained there, logged and counted in PostgreSQL (``plugin_failure_record``).
"""

from __future__ import annotations

import contextvars
import importlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connections

from core.errors import ApplicationError
from plugins.context import PluginContext, PluginFailed, PluginPermissionDenied, PluginTimeout

logger = logging.getLogger("chatter.plugins")


class PluginLoadError(Exception):
    """A plugin that cannot be loaded: missing code, an import error, a bad registration."""


@dataclass(frozen=True)
class ToolContribution:
    name: str
    description: str
    func: Callable[..., Any]
    args_schema: Any
    requires_approval: bool = False


@dataclass(frozen=True)
class WorkflowContribution:
    name: str
    description: str
    reply: Callable[..., Any]


@dataclass(frozen=True)
class HandlerContribution:
    name: str  # the registered name: "<plugin>.<handler>"
    func: Callable[..., Any]
    timeout: int
    max_attempts: int
    description: str


@dataclass(frozen=True)
class SubscriberContribution:
    func: Callable[..., Any]
    events: tuple[str, ...]  # empty: every type


@dataclass(frozen=True)
class MiddlewareContribution:
    before: Callable[..., Any] | None
    after: Callable[..., Any] | None


@dataclass(frozen=True)
class RouteContribution:
    path: str
    func: Callable[..., Any]
    methods: frozenset[str]
    staff_only: bool
    summary: str = ""
    request_schema: dict[str, Any] | None = None  # JSON Schema of the body, checked
    response_schema: dict[str, Any] | None = None  # JSON Schema of the answer, documented


@dataclass
class LoadedPlugin:
    id: str
    name: str
    version: str
    revision: int
    code_key: str  # what identifies its code: a new key re-imports it
    config: dict[str, Any]
    requested: frozenset[str]
    granted: frozenset[str]
    capabilities: frozenset[str]
    modules: tuple[str, ...]
    path: str | None = None  # the directory it was loaded from, for an uploaded wheel
    tools: dict[str, ToolContribution] = field(default_factory=dict)
    workflows: dict[str, WorkflowContribution] = field(default_factory=dict)
    handlers: dict[str, HandlerContribution] = field(default_factory=dict)
    subscribers: list[SubscriberContribution] = field(default_factory=list)
    middleware: list[MiddlewareContribution] = field(default_factory=list)
    routes: list[RouteContribution] = field(default_factory=list)
    health_check: Callable[..., Any] | None = None

    def context(self, *, user: Any = None) -> PluginContext:
        return PluginContext(
            plugin_id=self.id,
            name=self.name,
            config=dict(self.config),
            requested=self.requested,
            granted=self.granted,
            user=user,
        )

    def provides(self) -> dict[str, list[str]]:
        return {
            "tools": sorted(self.tools),
            "workflows": sorted(self.workflows),
            "handlers": sorted(self.handlers),
            "subscribers": [", ".join(s.events) or "*" for s in self.subscribers],
            "middleware": ["before" if m.before else "after" for m in self.middleware],
            "routes": sorted(f"{','.join(sorted(r.methods))} {r.path}" for r in self.routes),
        }


class PluginRegistrar:
    """What a plugin's entry point is called with: ``register(plugin)``. Each method adds a
    contribution to an extension point the manifest declared (``capabilities``); one it
    did not declare is refused, and the plugin does not load."""

    def __init__(self, loaded: LoadedPlugin) -> None:
        self._loaded = loaded
        self.name = loaded.name
        self.version = loaded.version
        self.config = dict(loaded.config)

    def _declared(self, capability: str) -> None:
        if capability not in self._loaded.capabilities:
            raise PluginLoadError(
                f"{self.name} registers {capability} but its manifest does not declare them"
            )

    def tool(
        self,
        name: str,
        *,
        description: str,
        func: Callable[..., Any],
        args_schema: Any,
        requires_approval: bool = False,
    ) -> None:
        """An agents' tool: ``func(ctx, **args)`` returns its result (a string or JSON).
        ``args_schema``: a JSON Schema object or a pydantic model of its arguments."""
        self._declared("tools")
        self._loaded.tools[name] = ToolContribution(
            name, description, func, args_schema, requires_approval
        )

    def workflow(self, name: str, *, description: str, reply: Callable[..., Any]) -> None:
        """A conversation workflow type: ``reply(ctx, messages, settings) -> str`` answers
        a turn, given the thread's messages ``[{role, content}]``."""
        self._declared("workflows")
        self._loaded.workflows[name] = WorkflowContribution(name, description, reply)

    def job_handler(
        self,
        name: str,
        *,
        func: Callable[..., Any],
        timeout: int = 300,
        max_attempts: int = 3,
        description: str = "",
    ) -> None:
        """A job handler, registered as ``<plugin>.<name>``: ``func(ctx, job, **args)``."""
        self._declared("handlers")
        full = f"{self.name}.{name}"
        self._loaded.handlers[full] = HandlerContribution(
            full, func, timeout, max_attempts, description
        )

    def subscriber(self, func: Callable[..., Any], *, events: list[str] | None = None) -> None:
        """``func(ctx, event)`` for each committed event of those types (all when empty):
        ``event`` is ``{id, type, timestamp, owner_id, data}``. Needs ``events.read``."""
        self._declared("subscribers")
        self._loaded.subscribers.append(SubscriberContribution(func, tuple(events or ())))

    def middleware(
        self,
        *,
        before: Callable[..., Any] | None = None,
        after: Callable[..., Any] | None = None,
    ) -> None:
        """Request hooks: ``before(ctx, request)`` may return a ``Refusal``; ``after(ctx,
        request, response)`` may return headers (``X-...``) to add. Each has a time budget."""
        self._declared("middleware")
        self._loaded.middleware.append(MiddlewareContribution(before, after))

    def route(
        self,
        path: str,
        func: Callable[..., Any],
        *,
        methods: tuple[str, ...] = ("GET",),
        staff_only: bool = False,
        summary: str = "",
        request_schema: dict[str, Any] | None = None,
        response_schema: dict[str, Any] | None = None,
    ) -> None:
        """``func(ctx, request)`` answers ``/api/v1/plugins/<name>/<path>`` (a JSON value or
        a ``PluginResponse``). The route is in the API's OpenAPI document with ``summary``
        (else the function's first docstring line) and the JSON Schemas given: a body off
        ``request_schema`` is refused with 400 before ``func`` is called."""
        self._declared("routes")
        for schema in (request_schema, response_schema):
            if schema is not None:
                _schema_check(schema, what=f"route {path!r}")
        self._loaded.routes.append(
            RouteContribution(
                path.strip("/"),
                func,
                frozenset(m.upper() for m in methods),
                staff_only,
                summary=summary or (func.__doc__ or "").strip().split("\n")[0],
                request_schema=request_schema,
                response_schema=response_schema,
            )
        )

    def health_check(self, func: Callable[..., Any]) -> None:
        """``func(ctx)`` raises when the plugin is unhealthy; may return details (a dict)."""
        self._loaded.health_check = func


# --- calling into a plugin ------------------------------------------------------------------
_executor: ThreadPoolExecutor | None = None
_executor_pid: int | None = None
_executor_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _executor, _executor_pid
    with _executor_lock:
        if _executor is None or _executor_pid != os.getpid():
            _executor = ThreadPoolExecutor(
                max_workers=settings.CHATTER_PLUGIN_THREADS, thread_name_prefix="plugin"
            )
            _executor_pid = os.getpid()
        return _executor


def _run_in_thread(func: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    try:
        return func(*args, **kwargs)
    finally:
        # The pool's threads outlive the call: hand their connection back.
        for connection in connections.all(initialized_only=True):
            connection.close()


def plugin_call(
    loaded: LoadedPlugin,
    point: str,
    func: Callable[..., Any],
    *args: Any,
    budget: float | None = None,
    threaded: bool = False,
    **kwargs: Any,
) -> Any:
    """Call a plugin's function, containing what it does wrong.

    ``threaded``: run it on this process's plugin thread pool and stop waiting after
    ``budget`` seconds (Python cannot kill a thread: a call that hangs keeps its pool
    thread, and calls beyond the pool's size wait, within their own budgets). Otherwise it
    runs in the caller's thread (and transaction), and a call that took longer than its
    budget counts as a timeout once it returns. Either way an exception or a timeout is
    logged, counted on the plugin's row (which may disable it, see plugin_failure_record)
    and raised as ``PluginFailed``; a success at the failing point ends the run."""
    from plugins.services.failures import plugin_failure_record, plugin_success_record

    budget = budget if budget is not None else settings.CHATTER_PLUGIN_CALL_BUDGET
    started = time.monotonic()
    try:
        if threaded:
            context = contextvars.copy_context()
            future = _pool().submit(context.run, _run_in_thread, func, args, kwargs)
            try:
                result = future.result(timeout=budget)
            except FutureTimeout:
                raise PluginTimeout(f"no answer within {budget:g} s") from None
        else:
            result = func(*args, **kwargs)
            elapsed = time.monotonic() - started
            if elapsed > budget:
                raise PluginTimeout(f"took {elapsed:.2f} s, over its {budget:g} s budget")
    except Exception as exc:
        timeout = isinstance(exc, PluginTimeout)
        message = f"{type(exc).__name__}: {exc}"
        # A 4xx the plugin raised on purpose (its route refusing bad input) is the caller's
        # fault, not the plugin's: not counted, or any client could disable a plugin.
        # Asking for what it was not granted is the plugin's.
        meant = (
            isinstance(exc, ApplicationError)
            and exc.status < 500
            and not isinstance(exc, PluginPermissionDenied)
        )
        if not meant:
            logger.warning("plugin %s failed in %s: %s", loaded.name, point, message, exc_info=exc)
            plugin_failure_record(
                plugin_id=loaded.id, point=point, error=message[:2000], timeout=timeout
            )
        raise PluginFailed(
            f"The plugin {loaded.name} failed ({point}): {message[:500]}",
            details={"plugin": loaded.name, "point": point},
        ) from exc
    plugin_success_record(plugin_id=loaded.id, point=point)
    return result


# --- this process's state -------------------------------------------------------------------
@dataclass
class _Runtime:
    generation: int | None = None
    loaded: dict[str, LoadedPlugin] = field(default_factory=dict)


_runtime = _Runtime()
_sync_lock = threading.RLock()


def loaded_plugins() -> list[LoadedPlugin]:
    """The plugins loaded in this process, enabled as of its last sync (a snapshot)."""
    return list(_runtime.loaded.values())


def loaded_plugin(name: str) -> LoadedPlugin | None:
    return _runtime.loaded.get(name)


def loaded_generation() -> int | None:
    return _runtime.generation


def plugins_sync(*, force: bool = False) -> bool:
    """Bring this process's plugins in step with the database, if its generation moved.
    Returns whether anything was reloaded."""
    from plugins.selectors import plugins_enabled, state_generation

    generation = state_generation()
    if generation == _runtime.generation and not force:
        return False
    with _sync_lock:
        if generation == _runtime.generation and not force:
            return False
        rows = {row.name: row for row in plugins_enabled()}
        current = dict(_runtime.loaded)
        for name, loaded in list(current.items()):
            row = rows.get(name)
            if row is None or str(row.pk) != loaded.id or row.revision != loaded.revision:
                _unapply(loaded)
                code_changed = row is None or _code_key(row) != loaded.code_key
                if code_changed:
                    _unimport(loaded)
                del current[name]
        for name, row in rows.items():
            if name in current:
                continue
            try:
                loaded = plugin_load(row)
                _apply(loaded)
            except Exception as exc:
                from plugins.services.failures import plugin_failure_record

                logger.warning("plugin %s could not be loaded: %s", name, exc, exc_info=exc)
                plugin_failure_record(
                    plugin_id=str(row.pk),
                    point="load",
                    error=f"{type(exc).__name__}: {exc}"[:2000],
                    timeout=False,
                )
                continue
            current[name] = loaded
        _runtime.loaded = current
        _runtime.generation = generation
    return True


def plugins_sync_quietly() -> None:
    """plugins_sync for the hooks that run it before other work: a failure (the database
    is away) is logged and the work goes on with what this process has loaded."""
    try:
        plugins_sync()
    except Exception:
        logger.exception("plugin state could not be read; keeping the plugins loaded")


def plugins_unload_all() -> None:
    """Forget every plugin in this process (tests; a process that stops)."""
    with _sync_lock:
        for loaded in list(_runtime.loaded.values()):
            _unapply(loaded)
            _unimport(loaded)
        _runtime.loaded = {}
        _runtime.generation = None


def _code_key(row: Any) -> str:
    wheel_sha = getattr(row, "wheel_sha256", "") or ""
    return f"{row.source}:{row.version}:{wheel_sha}"


def _plugin_path(row: Any) -> str | None:
    """The directory of an uploaded plugin's code on this machine (unpacked if missing)."""
    from plugins.models import PluginSource, PluginWheel
    from plugins.wheels import COMPLETE_MARKER, plugin_dir, wheel_unpack

    if row.source != PluginSource.UPLOAD:
        return None
    sha = row.wheel_sha256
    if not sha:
        raise PluginLoadError(f"{row.name}: its wheel is missing from the database")
    target = plugin_dir() / f"{row.name}-{sha[:16]}"
    if not (target / COMPLETE_MARKER).exists():
        data = PluginWheel.objects.filter(plugin_id=row.pk).values_list("data", flat=True).first()
        if data is None:
            raise PluginLoadError(f"{row.name}: its wheel is missing from the database")
        target = wheel_unpack(name=row.name, sha256=sha, data=bytes(data))
    return str(target)


def plugin_load(row: Any, *, apply_config: dict[str, Any] | None = None) -> LoadedPlugin:
    """Import a plugin's entry point and collect what it registers (nothing applied yet).
    Raises PluginLoadError (or the plugin's own exception)."""
    loaded = LoadedPlugin(
        id=str(row.pk),
        name=row.name,
        version=row.version,
        revision=row.revision,
        code_key=_code_key(row),
        config=dict(apply_config if apply_config is not None else row.config or {}),
        requested=frozenset(row.permissions_requested or ()),
        granted=frozenset(row.permissions_granted or ()) & frozenset(row.permissions_requested),
        capabilities=frozenset(row.capabilities or ()),
        modules=tuple(row.modules or ()),
    )
    loaded.path = _plugin_path(row)
    if loaded.path and loaded.path not in sys.path:
        # Appended: a plugin's modules never shadow the platform's (install refuses names
        # that exist already).
        sys.path.append(loaded.path)
    # Always its code as it is now: modules left by an earlier load (another version, a
    # trial load when it was enabled, a pip upgrade) are dropped first.
    _purge_modules(loaded.modules)
    importlib.invalidate_caches()
    module_name, _, attribute = row.entry_point.partition(":")
    try:
        module = importlib.import_module(module_name)
        register = getattr(module, attribute)
    except (ImportError, AttributeError) as exc:
        raise PluginLoadError(f"{row.entry_point} cannot be imported: {exc}") from exc
    if loaded.path:
        origin = os.path.realpath(getattr(module, "__file__", "") or "")
        if not origin.startswith(os.path.realpath(loaded.path) + os.sep):
            raise PluginLoadError(f"{module_name} was imported from {origin}, not its wheel")
    registrar = PluginRegistrar(loaded)
    register(registrar)
    return loaded


def _schema_check(schema: Any, *, what: str) -> None:
    from jsonschema import Draft202012Validator, SchemaError

    if not isinstance(schema, dict):
        raise PluginLoadError(f"{what}: a JSON Schema is an object")
    try:
        Draft202012Validator.check_schema(schema)  # the manifest's config schema's draft
    except SchemaError as exc:
        raise PluginLoadError(f"{what}: not a valid JSON Schema: {exc.message}") from exc


def plugin_trial_load(row: Any) -> None:
    """Load ``row``'s code once to see that it loads (raising as plugin_load does), and
    leave this process as it was: a version of it that runs here keeps running (its
    directory back on the path), and the next sync imports the new code afresh."""
    with _sync_lock:
        running = _runtime.loaded.get(row.name)
        if running is not None and running.path in sys.path:
            sys.path.remove(running.path)  # import the new code, not the running one's
        trial_path = _plugin_path(row)
        try:
            plugin_load(row)
        finally:
            _purge_modules(tuple(row.modules or ()))
            if trial_path in sys.path:
                sys.path.remove(trial_path)
            if running is not None and running.path and running.path not in sys.path:
                sys.path.append(running.path)
            importlib.invalidate_caches()


def _purge_modules(modules: tuple[str, ...]) -> None:
    for module in modules:
        for name in [n for n in sys.modules if n == module or n.startswith(module + ".")]:
            del sys.modules[name]


def _unimport(loaded: LoadedPlugin) -> None:
    """Drop its modules and its directory, so that the next load imports its new code."""
    _purge_modules(loaded.modules)
    if loaded.path and loaded.path in sys.path:
        sys.path.remove(loaded.path)
    importlib.invalidate_caches()


# --- the core's registries ------------------------------------------------------------------
def _apply(loaded: LoadedPlugin) -> None:
    from agents.tools.registry import tool_register, tool_registered
    from conversations.workflows import workflow_get
    from jobs.registry import handler_get

    for name in loaded.tools:
        existing = tool_registered(name)
        if existing is not None and existing.source != f"plugin:{loaded.name}":
            raise PluginLoadError(f"a tool named {name!r} exists already ({existing.source})")
    for name in loaded.workflows:
        existing_workflow = workflow_get(name)
        if existing_workflow is not None and existing_workflow.source != f"plugin:{loaded.name}":
            raise PluginLoadError(f"a workflow named {name!r} exists already")
    for name in loaded.handlers:
        spec = handler_get(name)
        if spec is not None and not getattr(spec.func, "chatter_plugin", "") == loaded.name:
            raise PluginLoadError(f"a job handler named {name!r} exists already")
    from plugins.extensions import handler_spec_for, tool_spec_for, workflow_spec_for

    for contribution in loaded.tools.values():
        tool_register(tool_spec_for(loaded, contribution), replace=True)
    from conversations.workflows import workflow_register

    for contribution in loaded.workflows.values():
        workflow_register(workflow_spec_for(loaded, contribution))
    from jobs.registry import job_handler

    for contribution in loaded.handlers.values():
        func = handler_spec_for(loaded, contribution)
        job_handler(
            contribution.name,
            timeout=contribution.timeout,
            max_attempts=contribution.max_attempts,
            description=contribution.description or f"{loaded.name}'s {contribution.name}",
        )(func)


def _unapply(loaded: LoadedPlugin) -> None:
    from agents.tools.registry import tool_registered, tool_unregister
    from conversations.workflows import workflow_get, workflow_unregister
    from jobs.registry import handler_get, handler_unregister

    source = f"plugin:{loaded.name}"
    for name in loaded.tools:
        spec = tool_registered(name)
        if spec is not None and spec.source == source:
            tool_unregister(name)
    for name in loaded.workflows:
        workflow = workflow_get(name)
        if workflow is not None and workflow.source == source:
            workflow_unregister(name)
    for name in loaded.handlers:
        handler = handler_get(name)
        if handler is not None and getattr(handler.func, "chatter_plugin", "") == loaded.name:
            handler_unregister(name)
