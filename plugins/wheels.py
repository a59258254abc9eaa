"""Wheels: checking an uploaded one before anything of it is stored or imported, unpacking
it into this machine's plugin directory, and building one from a plugin's source tree
(``manage.py plugins build``, the tests) without network or build tools.

Only pure-Python wheels (``py3-none-any``) are taken; every file must be listed in RECORD
with its SHA-256, no path may leave the wheel's root, and nothing goes anywhere but the
plugin's own directory (no ``.data`` scripts or headers).
"""

from __future__ import annotations

import base64
import configparser
import csv
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from django.conf import settings
from packaging.utils import canonicalize_name

from core.errors import ApplicationError
from plugins.manifest import ENTRY_POINT_GROUP, MANIFEST_FILE, Manifest, manifest_parse

# {distribution}-{version}(-{build})?-{python}-{abi}-{platform}.whl
WHEEL_NAME = re.compile(
    r"^(?P<dist>[A-Za-z0-9_.]+)-(?P<version>[A-Za-z0-9_.!+]+)(-(?P<build>\d[^-]*))?"
    r"-(?P<python>[^-]+)-(?P<abi>[^-]+)-(?P<platform>[^-]+)\.whl$"
)
MAX_MEMBERS = 2000
COMPLETE_MARKER = ".chatter-unpacked"


def _bad(message: str, code: str = "invalid_wheel", **details: Any) -> ApplicationError:
    return ApplicationError(message, code=code, details=details or {"file": [message]})


@dataclass(frozen=True)
class WheelInfo:
    filename: str
    sha256: str
    size: int
    manifest: Manifest
    modules: list[str]  # top-level packages and modules it brings


def record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def _safe_member(info: zipfile.ZipInfo) -> str:
    name = info.filename
    parts = name.split("/")
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or ":" in parts[0]
        or any(part in ("..", ".") for part in parts)
        or "\x00" in name
    ):
        raise _bad(f"The wheel holds a path outside its root: {name!r}.", code="unsafe_wheel")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise _bad(f"The wheel holds a symbolic link: {name!r}.", code="unsafe_wheel")
    return name


def wheel_inspect(*, filename: str, data: bytes, sha256: str) -> WheelInfo:
    """Check an uploaded wheel; its manifest parsed (not yet checked for compatibility).
    Every refusal is a 400 naming what is wrong."""
    limit = settings.CHATTER_PLUGIN_MAX_WHEEL_BYTES
    if len(data) > limit:
        raise _bad(
            f"The wheel is {len(data)} bytes; at most {limit} are accepted.",
            code="wheel_too_large",
        )
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256.strip().lower():
        raise ApplicationError(
            "The file's SHA-256 is not the one given: it was altered or truncated.",
            code="hash_mismatch",
            details={"sha256": [f"The file's SHA-256 is {actual}."]},
        )
    match = WHEEL_NAME.match(os.path.basename(filename or ""))
    if match is None:
        raise _bad("The file name is not a wheel's (name-version-py3-none-any.whl).")
    if (match["abi"], match["platform"]) != ("none", "any") or not match["python"].startswith(
        "py3"
    ):
        raise _bad(
            "Only pure-Python wheels (py3-none-any) can be installed.", code="unsupported_wheel"
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _bad(f"The file is not a valid zip archive: {exc}.") from None
    with archive:
        return _inspect_archive(archive, members, match, filename, actual, len(data))


def _inspect_archive(
    archive: zipfile.ZipFile,
    members: list[zipfile.ZipInfo],
    match: re.Match[str],
    filename: str,
    sha256: str,
    size: int,
) -> WheelInfo:
    if len(members) > MAX_MEMBERS:
        raise _bad(f"The wheel holds more than {MAX_MEMBERS} files.", code="wheel_too_large")
    unpacked = sum(info.file_size for info in members)
    if unpacked > settings.CHATTER_PLUGIN_MAX_UNPACKED_BYTES:
        raise _bad(
            f"The wheel unpacks to {unpacked} bytes; at most "
            f"{settings.CHATTER_PLUGIN_MAX_UNPACKED_BYTES} are accepted.",
            code="wheel_too_large",
        )
    names = {_safe_member(info): info for info in members if not info.is_dir()}
    dist_info = f"{match['dist']}-{match['version']}.dist-info"
    required = [f"{dist_info}/{part}" for part in ("METADATA", "WHEEL", "RECORD")]
    missing = [name for name in required if name not in names]
    if missing:
        raise _bad(f"The wheel lacks {', '.join(missing)}.")

    def read(name: str) -> bytes:
        try:
            return archive.read(name)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise _bad(f"{name} cannot be read: {exc}.") from None

    contents = {name: read(name) for name in names}
    _check_record(contents, dist_info)
    metadata = HeaderParser().parsestr(contents[f"{dist_info}/METADATA"].decode("utf-8", "replace"))
    if canonicalize_name(metadata.get("Name", "")) != canonicalize_name(match["dist"]) or (
        metadata.get("Version") != match["version"]
    ):
        raise _bad("METADATA's name and version are not the file name's.")
    entry_name, entry_value = _entry_point(contents.get(f"{dist_info}/entry_points.txt"))
    manifest_path = entry_value.split(":", 1)[0].split(".")[0] + "/" + MANIFEST_FILE
    if manifest_path not in contents:
        raise ApplicationError(
            f"The wheel has no manifest ({manifest_path}).",
            code="missing_manifest",
            details={"file": [f"{manifest_path} is missing."]},
        )
    try:
        raw = json.loads(contents[manifest_path])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApplicationError(
            f"The manifest is not JSON: {exc}.", code="invalid_manifest", details={}
        ) from None
    manifest = manifest_parse(raw)
    mismatches = {
        "name": (manifest.name, entry_name),
        "entry_point": (manifest.entry_point, entry_value),
        "version": (manifest.version, match["version"]),
    }
    for field, (declared, packaged) in mismatches.items():
        if declared != packaged:
            raise ApplicationError(
                f"The manifest's {field} ({declared!r}) is not the package's ({packaged!r}).",
                code="invalid_manifest",
                details={field: [f"The package says {packaged!r}."]},
            )
    modules = sorted(
        {
            name.split("/")[0].removesuffix(".py")
            for name in contents
            if not name.split("/")[0].endswith((".dist-info", ".data"))
        }
    )
    if any(name.split("/")[0].endswith(".data") for name in contents):
        raise _bad("The wheel installs files outside the plugin (a .data directory).")
    return WheelInfo(
        filename=os.path.basename(filename),
        sha256=sha256,
        size=size,
        manifest=manifest,
        modules=modules,
    )


def _check_record(contents: dict[str, bytes], dist_info: str) -> None:
    record_name = f"{dist_info}/RECORD"
    try:
        rows = list(csv.reader(io.StringIO(contents[record_name].decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise _bad(f"RECORD cannot be read: {exc}.") from None
    listed: dict[str, str] = {}
    for row in rows:
        if row and row[0]:
            listed[row[0]] = row[1] if len(row) > 1 else ""
    for name, body in contents.items():
        if name == record_name:
            continue
        expected = listed.get(name)
        if not expected:
            raise _bad(f"{name} is not listed in RECORD with its hash.", code="unsafe_wheel")
        if expected != record_hash(body):
            raise ApplicationError(
                f"{name} does not match its hash in RECORD.",
                code="hash_mismatch",
                details={"file": [f"{name}: RECORD says {expected}."]},
            )


def _entry_point(text: bytes | None) -> tuple[str, str]:
    if text is None:
        raise ApplicationError(
            f"The wheel declares no {ENTRY_POINT_GROUP} entry point (entry_points.txt).",
            code="missing_manifest",
            details={"file": ["entry_points.txt is missing."]},
        )
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text.decode("utf-8"))
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise _bad(f"entry_points.txt cannot be read: {exc}.") from None
    if not parser.has_section(ENTRY_POINT_GROUP) or len(parser[ENTRY_POINT_GROUP]) != 1:
        raise ApplicationError(
            f"The wheel declares no single {ENTRY_POINT_GROUP} entry point.",
            code="missing_manifest",
            details={"file": [f"entry_points.txt needs one [{ENTRY_POINT_GROUP}] entry."]},
        )
    (name, value), *_ = parser[ENTRY_POINT_GROUP].items()
    return name.strip(), value.strip()


# --- this machine's copy --------------------------------------------------------------------
def plugin_dir() -> Path:
    return Path(settings.CHATTER_PLUGIN_DIR)


def wheel_unpack(*, name: str, sha256: str, data: bytes) -> Path:
    """The directory (on sys.path once loaded) holding this wheel's files, unpacked now if
    this machine has not yet. Content-addressed (name and hash), written to a temporary
    directory and renamed into place, so processes sharing the data directory never see a
    half-written copy and reuse one another's."""
    target = plugin_dir() / f"{name}-{sha256[:16]}"
    if (target / COMPLETE_MARKER).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise _bad("The stored wheel does not match its hash.", code="hash_mismatch")
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                member = _safe_member(info)
                if info.is_dir():
                    continue
                path = staging / member
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(archive.read(info))
        (staging / COMPLETE_MARKER).write_text(sha256)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / COMPLETE_MARKER).exists():  # not another process's copy
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def unpacked_prune(*, keep: set[str]) -> int:
    """Remove this machine's unpacked copies whose directory name is not in ``keep``."""
    removed = 0
    root = plugin_dir()
    if not root.is_dir():
        return 0
    for entry in root.iterdir():
        if entry.is_dir() and not entry.name.startswith(".") and entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed


# --- building one -----------------------------------------------------------------------------
def wheel_build(source: Path) -> tuple[str, bytes]:
    """A py3-none-any wheel of the plugin whose pyproject.toml is in ``source``: its
    ``[tool.setuptools] packages`` with every file in them, METADATA, WHEEL, its entry
    points and a RECORD with every file's hash. What ``pip wheel`` makes of the same tree,
    without network or build tools."""
    project_file = source / "pyproject.toml"
    pyproject = tomllib.loads(project_file.read_text())
    project = pyproject["project"]
    name, version = project["name"], project["version"]
    dist = canonicalize_name(name).replace("-", "_")
    dist_info = f"{dist}-{version}.dist-info"
    files: dict[str, bytes] = {}
    for package in pyproject.get("tool", {}).get("setuptools", {}).get("packages", []):
        root = source / package.replace(".", "/")
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files[path.relative_to(source).as_posix()] = path.read_bytes()
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        f"Summary: {project.get('description', '')}",
    ]
    if project.get("license"):
        license = project["license"]
        metadata.append(f"License: {license if isinstance(license, str) else license.get('text')}")
    files[f"{dist_info}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: chatter-plugins\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    entry_points = project.get("entry-points", {})
    lines = []
    for group, entries in entry_points.items():
        lines.append(f"[{group}]")
        lines.extend(f"{key} = {value}" for key, value in entries.items())
        lines.append("")
    files[f"{dist_info}/entry_points.txt"] = "\n".join(lines).encode()
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for path, body in files.items():
        writer.writerow([path, record_hash(body), len(body)])
    writer.writerow([f"{dist_info}/RECORD", "", ""])
    files[f"{dist_info}/RECORD"] = record.getvalue().encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, body in files.items():
            info = zipfile.ZipInfo(path, date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, body)
    return f"{dist}-{version}-py3-none-any.whl", buffer.getvalue()
