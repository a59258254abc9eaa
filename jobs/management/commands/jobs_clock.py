from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from jobs.clock import Clock


class Command(BaseCommand):
    help = "Run the jobs clock: due retries and run_at jobs, crashed and hung workers, lost tokens."

    def handle(self, *args: Any, **options: Any) -> None:
        Clock().run()
