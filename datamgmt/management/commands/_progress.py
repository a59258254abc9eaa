"""A tqdm bar fed by the services' progress callbacks, and Ctrl-C as a clean exit."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.core.management.base import CommandError
from tqdm import tqdm

from core.errors import ApplicationError


@contextmanager
def progress_bar(stream: Any, unit: str) -> Iterator[Callable[[int, int, str], None]]:
    bar = tqdm(total=0, unit=unit, file=stream, disable=None, dynamic_ncols=True)

    def report(done: int, total: int, message: str) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.set_postfix_str(message[:40], refresh=False)
        bar.refresh()

    try:
        yield report
    finally:
        bar.close()


@contextmanager
def clear_errors() -> Iterator[None]:
    """Refusals as one line and exit 1; Ctrl-C as exit 130 (the services clean up first)."""
    try:
        yield
    except ApplicationError as exc:
        raise CommandError(f"{exc.message} [{exc.code}]") from exc
    except KeyboardInterrupt as exc:
        raise CommandError("Interrupted: nothing was left half-written.", returncode=130) from exc


def secret_from_env(name: str | None) -> str | None:
    if not name:
        return None
    value = os.environ.get(name)
    if not value:
        raise CommandError(f"The environment variable {name} is not set or empty.")
    return value
