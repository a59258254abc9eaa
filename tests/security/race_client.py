"""One of several client processes racing a rate limit (run by test_rate_limits.py).

Sends one request per thread through the whole middleware stack of this process, after the
parent creates the go-file, and prints the status codes."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatter_project.settings")
django.setup()

from django.db import connections  # noqa: E402
from django.test import Client  # noqa: E402


def main(raw_key: str, threads: int, go_file: Path) -> None:
    statuses: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def hit() -> None:
        try:
            barrier.wait()
            status = Client().get("/api/v1/whoami/", HTTP_AUTHORIZATION=f"Bearer {raw_key}")
            with lock:
                statuses.append(status.status_code)
        finally:
            connections.close_all()

    print("ready", flush=True)
    while not go_file.exists():
        time.sleep(0.01)
    workers = [threading.Thread(target=hit) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(" ".join(map(str, statuses)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
