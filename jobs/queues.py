"""The django-q2 cluster's in-memory queues, made to survive the death of any of its processes.

Why and how: docs/architecture.md, "jobs/queues.py".
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
import threading
import time
from multiprocessing.sharedctypes import Value
from typing import Any


class ProcessDeathSafeLock:
    """A reentrant lock between forked processes, released when its holder dies (even SIGKILL).

    ``fcntl`` record locks exclude processes, not threads, so a thread lock in front of it
    keeps two threads of one process apart too (the queues' feeder threads). Reentrant like
    the RLock a ``multiprocessing.Value`` expects (its ``value`` takes its own lock again).
    """

    def __init__(self) -> None:
        fd, path = tempfile.mkstemp(prefix="chatter-queue-lock-")
        os.unlink(path)  # the lock lives on the open inode; nothing is left on disk
        self._fd = fd
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._threads = threading.Lock()
        self._owner: int | None = None
        self._depth = 0

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        if self._pid != os.getpid():
            self._reset()  # a forked child holds nothing, whatever its parent held at fork
        me = threading.get_ident()
        if self._owner == me:
            self._depth += 1
            return True
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        wait = -1 if timeout is None or not block else max(0.0, timeout)
        if not self._threads.acquire(block, wait):
            return False
        try:
            if block and deadline is None:
                self._lock_blocking()
            else:
                while True:
                    try:
                        fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except (BlockingIOError, PermissionError):
                        if not block or (deadline is not None and time.monotonic() >= deadline):
                            self._threads.release()
                            return False
                        time.sleep(0.005)
        except BaseException:
            self._threads.release()
            raise
        self._owner, self._depth = me, 1
        return True

    def _lock_blocking(self) -> None:
        while True:
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX)  # the kernel wakes us when it is free
                return
            except OSError as exc:
                if exc.errno != errno.EDEADLK:
                    raise
                # Record locks belong to processes, so the kernel's deadlock check sees a
                # cycle where threads merely wait: this process's feeder thread waits for
                # one queue's writer lock while its main thread holds the other queue's
                # reader lock, and a thread of the holder's process waits for that one.
                # Nothing was taken; ask again once the other side has moved.
                time.sleep(0.002)

    def release(self) -> None:
        if self._owner != threading.get_ident():
            raise RuntimeError("release of a lock this thread does not hold")
        self._depth -= 1
        if self._depth:
            return
        self._owner = None
        fcntl.lockf(self._fd, fcntl.LOCK_UN)
        self._threads.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _queue_class() -> type:
    from django_q.queues import Queue, SharedCounter

    class DeathSafeQueue(Queue):  # type: ignore[misc,valid-type]
        """django-q2's Queue whose readers and writers cannot wedge each other by dying."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._rlock = ProcessDeathSafeLock()
            self._wlock = ProcessDeathSafeLock()
            counter = SharedCounter.__new__(SharedCounter)
            counter.count = Value("i", 0, lock=ProcessDeathSafeLock())
            self.size = counter

    return DeathSafeQueue


def install() -> None:
    """Make django-q2's sentinel build its task and result queues with death-safe locks."""
    import django_q.cluster

    if getattr(django_q.cluster.Queue, "chatter_death_safe", False):
        return
    queue_class = _queue_class()
    queue_class.chatter_death_safe = True
    django_q.cluster.Queue = queue_class
