"""Install, discover, enable, disable, configure, update and uninstall plugins.

Each change is one transaction that also takes a new plugin-state generation
(``state_bump``), so every web and worker process applies it at its next request, job or
event batch; each is written to the audit log by the service, for the API and the admin
alike.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.http import HttpRequest

from accounts.models import User
from accounts.services import log_action
from core.errors import ApplicationError, Conflict
from plugins.manifest import (
    ENTRY_POINT_GROUP,
    MANIFEST_FILE,
    PERMISSIONS,
    Manifest,
    config_errors,
    config_secret_paths,
    config_unmasked,
    manifest_check_compatible,
    manifest_parse,
)
from plugins.models import Plugin, PluginSource, PluginState, PluginWheel
from plugins.wheels import plugin_dir, wheel_inspect

logger = logging.getLogger("chatter.plugins")


def state_bump() -> int:
    """A new generation of the plugin state, in the caller's transaction. From a sequence:
    a rolled-back change never hands its value to another state."""
    table = PluginState._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (id, generation, updated_at) "
            "VALUES (1, nextval('plugins_generation_seq'), now()) "
            "ON CONFLICT (id) DO UPDATE SET generation = EXCLUDED.generation, updated_at = now() "
            "RETURNING generation"
        )
        return int(cursor.fetchone()[0])


def _config_check(schema: dict[str, Any], config: Any) -> None:
    errors = config_errors(schema, config)
    if errors:
        raise ApplicationError(
            "The configuration does not fit the plugin's schema.",
            code="invalid_config",
            details=errors,
        )


def _changed_keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def _modules_check(modules: list[str], *, name: str) -> None:
    """A plugin's top-level modules may not be another plugin's, nor shadow one this
    installation already imports from elsewhere (``django``, ``core``, ...)."""
    taken = {
        module: other
        for other, others in Plugin.objects.exclude(name=name).values_list("name", "modules")
        for module in others or []
    }
    root = os.path.realpath(plugin_dir())
    for module in modules:
        if module in taken:
            raise ApplicationError(
                f"The module {module!r} belongs to the plugin {taken[module]!r}.",
                code="module_conflict",
                details={"modules": [module]},
            )
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        origin = os.path.realpath(spec.origin) if spec is not None and spec.origin else ""
        if spec is not None and not origin.startswith(root + os.sep):
            raise ApplicationError(
                f"The module {module!r} exists in this installation already: a plugin may "
                "not shadow it.",
                code="module_conflict",
                details={"modules": [module]},
            )


def _manifest_fields(manifest: Manifest) -> dict[str, Any]:
    return {
        "version": manifest.version,
        "description": manifest.description,
        "author": manifest.author,
        "license": manifest.license,
        "type": manifest.type,
        "entry_point": manifest.entry_point,
        "capabilities": manifest.capabilities,
        "permissions_requested": manifest.permissions,
        "config_schema": manifest.config_schema,
        "chatter_versions": manifest.chatter_versions,
        "manifest": manifest.raw,
    }


def _migrated_config(plugin: Plugin, manifest: Manifest, config: dict[str, Any] | None) -> dict:
    """The configuration an update keeps: the given one, else the current one if it fits
    the new schema; else the update is refused."""
    if config is not None:
        merged = config_unmasked(manifest.config_schema, config, plugin.config)
        _config_check(manifest.config_schema, merged)
        return merged
    errors = config_errors(manifest.config_schema, plugin.config)
    if errors:
        raise ApplicationError(
            f"The current configuration does not fit {manifest.name} {manifest.version}'s "
            "schema: send a configuration that does with the update.",
            code="config_incompatible",
            details=errors,
        )
    return plugin.config


def plugin_install(
    *,
    actor: User,
    filename: str,
    data: bytes,
    sha256: str,
    config: dict[str, Any] | None = None,
    request: HttpRequest | None = None,
) -> tuple[Plugin, bool]:
    """Install an uploaded wheel (disabled until enabled), or update the installed plugin
    of that name to its version. Returns the plugin and whether it is new."""
    info = wheel_inspect(filename=filename, data=data, sha256=sha256)
    manifest = info.manifest
    manifest_check_compatible(manifest)
    with transaction.atomic():
        plugin = Plugin.objects.select_for_update().filter(name=manifest.name).first()
        if plugin is not None and plugin.source != PluginSource.UPLOAD:
            raise Conflict(
                f"{plugin.name} is pip-installed on this machine: update it with pip.",
                code="installed_by_pip",
            )
        _modules_check(info.modules, name=manifest.name)
        if plugin is None:
            if config is not None:
                _config_check(manifest.config_schema, config)
            plugin = Plugin.objects.create(
                name=manifest.name,
                source=PluginSource.UPLOAD,
                modules=info.modules,
                config=config or {},
                installed_by=actor,
                **_manifest_fields(manifest),
            )
            created, previous = True, None
        else:
            current_sha = PluginWheel.objects.filter(plugin=plugin).values_list("sha256", flat=True)
            if plugin.version == manifest.version:
                same = info.sha256 in current_sha
                raise Conflict(
                    f"{plugin.name} {plugin.version} is installed already"
                    + ("." if same else "; a changed build needs a new version number."),
                    code="already_installed",
                )
            new_config = _migrated_config(plugin, manifest, config)
            previous = plugin.version
            for key, value in _manifest_fields(manifest).items():
                setattr(plugin, key, value)
            plugin.modules = info.modules
            plugin.config = new_config
            # Grants of permissions the new version no longer asks for lapse.
            plugin.permissions_granted = [
                p for p in plugin.permissions_granted if p in manifest.permissions
            ]
            plugin.revision = F("revision") + 1
            plugin.save()
            plugin.refresh_from_db()
            PluginWheel.objects.filter(plugin=plugin).delete()
            created = False
        PluginWheel.objects.create(
            plugin=plugin, filename=info.filename, sha256=info.sha256, size=info.size, data=data
        )
        if not created and plugin.enabled:
            _trial_load(
                plugin,
                what=f"{plugin.name} {plugin.version}",
                then=f" {previous} stays installed and enabled.",
            )
        state_bump()
        log_action(
            actor=actor,
            action="plugin.installed" if created else "plugin.updated",
            target=plugin,
            details={
                "version": plugin.version,
                "previous_version": previous,
                "sha256": info.sha256,
                "filename": info.filename,
            },
            request=request,
        )
    return plugin, created


def _entry_point_manifest(entry_point: importlib.metadata.EntryPoint) -> tuple[Manifest, list]:
    dist = entry_point.dist
    if dist is None:
        raise ApplicationError(f"{entry_point.name}: no distribution", code="invalid_manifest")
    top = entry_point.value.split(":", 1)[0].split(".")[0]
    wanted = f"{top}/{MANIFEST_FILE}"
    files = dist.files or []
    path = next((f for f in files if f.as_posix() == wanted), None)
    if path is None:
        raise ApplicationError(f"{dist.name} has no {wanted}", code="missing_manifest")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ApplicationError(f"{wanted}: {exc}", code="invalid_manifest") from None
    manifest = manifest_parse(raw)
    if manifest.name != entry_point.name or manifest.entry_point != entry_point.value:
        raise ApplicationError(
            f"{dist.name}: the manifest's name or entry point is not the package's",
            code="invalid_manifest",
        )
    # Only its entry point's package: a pip distribution may bring other top-level names
    # (a `tests` package) that are not the plugin's to reload.
    modules = [top]
    return manifest, modules


def plugin_discover(*, actor: User | None = None) -> dict[str, list[str]]:
    """Register the plugins pip installed (the ``chatter.plugins`` entry points) that the
    database does not know yet (disabled), and bring known ones to their installed version
    (an update: its configuration kept if it fits, else the plugin is disabled until
    configured). Returns what it found: {added, updated, refused: ["name: why"]}."""
    found: dict[str, list[str]] = {"added": [], "updated": [], "refused": []}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            manifest, modules = _entry_point_manifest(entry_point)
            manifest_check_compatible(manifest)
            with transaction.atomic():
                plugin = Plugin.objects.select_for_update().filter(name=manifest.name).first()
                if plugin is None:
                    plugin = Plugin.objects.create(
                        name=manifest.name,
                        source=PluginSource.ENTRY_POINT,
                        modules=modules,
                        **_manifest_fields(manifest),
                    )
                    state_bump()
                    log_action(
                        actor=actor,
                        action="plugin.discovered",
                        target=plugin,
                        details={"version": plugin.version},
                    )
                    found["added"].append(plugin.name)
                    continue
                if plugin.source != PluginSource.ENTRY_POINT:
                    raise ApplicationError(f"an uploaded plugin is named {plugin.name}")
                if plugin.version == manifest.version:
                    continue
                previous = plugin.version
                errors = config_errors(manifest.config_schema, plugin.config)
                for key, value in _manifest_fields(manifest).items():
                    setattr(plugin, key, value)
                plugin.modules = modules
                plugin.permissions_granted = [
                    p for p in plugin.permissions_granted if p in manifest.permissions
                ]
                if errors and plugin.enabled:
                    plugin.enabled = False
                    plugin.disabled_reason = (
                        f"Updated to {manifest.version}: its configuration no longer fits "
                        "the schema; configure it, then enable it."
                    )
                plugin.revision = F("revision") + 1
                plugin.save()
                state_bump()
                log_action(
                    actor=actor,
                    action="plugin.updated",
                    target=plugin,
                    details={"version": manifest.version, "previous_version": previous},
                )
                found["updated"].append(manifest.name)
        except ApplicationError as exc:
            found["refused"].append(f"{entry_point.name}: {exc.message}")
            logger.warning("plugin entry point %s refused: %s", entry_point.name, exc.message)
    return found


def _permissions_check(plugin: Plugin, permissions: list[str]) -> None:
    unknown = [p for p in permissions if p not in PERMISSIONS]
    unasked = [p for p in permissions if p in PERMISSIONS and p not in plugin.permissions_requested]
    if unknown or unasked:
        raise ApplicationError(
            "Only permissions the plugin asked for can be granted.",
            code="invalid_permissions",
            details={
                "permissions": [f"{p}: unknown" for p in unknown]
                + [f"{p}: not asked for by {plugin.name}" for p in unasked]
            },
        )


def plugin_grant(
    *, plugin: Plugin, actor: User, permissions: list[str], request: HttpRequest | None = None
) -> Plugin:
    """Set the permissions granted to a plugin (each one it asked for), enabled or not."""
    _permissions_check(plugin, permissions)
    granted = sorted(set(permissions))
    with transaction.atomic():
        Plugin.objects.filter(pk=plugin.pk).update(
            permissions_granted=granted, revision=F("revision") + 1
        )
        state_bump()
        plugin.refresh_from_db()
        log_action(
            actor=actor,
            action="plugin.granted",
            target=plugin,
            details={"permissions_granted": granted},
            request=request,
        )
    return plugin


def _trial_load(plugin: Plugin, *, what: str = "", then: str = "") -> None:
    """Load the plugin's code once here, before enabling it or installing a new version of
    an enabled one: code that does not load is a 409 and nothing changes (an update's
    transaction rolls back, the running version stays), instead of failing in every process."""
    from plugins.runtime import plugin_trial_load
    from plugins.selectors import plugin_with_wheel

    try:
        plugin_trial_load(plugin_with_wheel(plugin.pk))
    except Exception as exc:
        raise Conflict(
            f"{what or plugin.name} cannot be loaded: {type(exc).__name__}: {exc}.{then}",
            code="plugin_load_failed",
        ) from exc


def plugin_enable(
    *,
    plugin: Plugin,
    actor: User,
    permissions: list[str] | None = None,
    request: HttpRequest | None = None,
) -> Plugin:
    """Enable a plugin, granting ``permissions`` (each one it asked for; None keeps the
    current grants). Its configuration must fit its schema, its Chatter range must hold,
    and it must load here: its code is imported and registered once before it is enabled."""
    if permissions is not None:
        _permissions_check(plugin, permissions)
    manifest_check_compatible(manifest_parse(plugin.manifest))
    errors = config_errors(plugin.config_schema, plugin.config)
    if errors:
        raise Conflict(
            f"{plugin.name} needs a configuration that fits its schema before it is enabled.",
            code="configuration_required",
            details=errors,
        )
    _trial_load(plugin)
    granted = sorted(set(permissions)) if permissions is not None else plugin.permissions_granted
    with transaction.atomic():
        Plugin.objects.filter(pk=plugin.pk).update(
            enabled=True,
            permissions_granted=granted,
            disabled_reason="",
            auto_disabled_at=None,
            consecutive_failures=0,
            revision=F("revision") + 1,
        )
        state_bump()
        plugin.refresh_from_db()
        log_action(
            actor=actor,
            action="plugin.enabled",
            target=plugin,
            details={"permissions_granted": granted},
            request=request,
        )
    return plugin


def plugin_disable(
    *, plugin: Plugin, actor: User, reason: str = "", request: HttpRequest | None = None
) -> Plugin:
    """Disable a plugin everywhere (its code stays installed, its data kept)."""
    with transaction.atomic():
        Plugin.objects.filter(pk=plugin.pk).update(
            enabled=False,
            disabled_reason=reason[:500] or f"Disabled by {actor.get_username()}.",
            revision=F("revision") + 1,
        )
        state_bump()
        plugin.refresh_from_db()
        log_action(actor=actor, action="plugin.disabled", target=plugin, request=request)
    return plugin


def plugin_configure(
    *,
    plugin: Plugin,
    actor: User,
    config: dict[str, Any],
    request: HttpRequest | None = None,
) -> Plugin:
    """Replace a plugin's configuration, checked against its schema. A secret sent back as
    the mask (********) keeps its current value. The audit log names the changed keys,
    never their values."""
    if not isinstance(config, dict):
        raise ApplicationError("config is an object.", details={"config": ["Not an object."]})
    merged = config_unmasked(plugin.config_schema, config, plugin.config)
    _config_check(plugin.config_schema, merged)
    with transaction.atomic():
        before = plugin.config
        Plugin.objects.filter(pk=plugin.pk).update(config=merged, revision=F("revision") + 1)
        state_bump()
        plugin.refresh_from_db()
        secrets = set(config_secret_paths(plugin.config_schema))
        log_action(
            actor=actor,
            action="plugin.configured",
            target=plugin,
            details={
                "changed": [
                    f"{key} (secret)" if key in secrets else key
                    for key in _changed_keys(before, merged)
                ]
            },
            request=request,
        )
    return plugin


def plugin_uninstall(*, plugin: Plugin, actor: User, request: HttpRequest | None = None) -> str:
    """Remove a plugin: its row, its wheel and its data (every process unloads it). A
    pip-installed plugin's package stays on the machine (pip uninstall removes it) and
    would be discovered again, disabled."""
    name = plugin.name
    with transaction.atomic():
        log_action(
            actor=actor,
            action="plugin.uninstalled",
            target=plugin,
            details={"version": plugin.version, "source": plugin.source},
            request=request,
        )
        plugin.delete()
        state_bump()
    return name
