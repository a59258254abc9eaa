"""The cluster queues' process-death-safe locks under the kernel's thread-blind deadlock check."""

from __future__ import annotations

import multiprocessing
import threading
import time

from jobs.queues import ProcessDeathSafeLock


def _hold_first_then_want_second(first, second, ready, done) -> None:
    first.acquire()  # the main thread holds the first lock...
    waiter = threading.Thread(target=lambda: (second.acquire(), second.release()))
    waiter.start()  # ...while another thread waits for the second
    time.sleep(0.3)  # let it reach the kernel's wait
    ready.set()
    time.sleep(0.5)  # the parent now asks for the first lock: a cycle, as the kernel sees it
    first.release()
    waiter.join(timeout=60)
    done.value = 0 if not waiter.is_alive() else 1


def test_a_false_deadlock_between_two_processes_threads_is_waited_out() -> None:
    # The cluster's processes each hold one queue's reader lock in their main thread while
    # their feeder thread waits for another queue's writer lock. POSIX record locks belong
    # to processes, so the kernel reports EDEADLK for such a cycle although no thread waits
    # on itself; django-q2's feeder thread died of it and the queue stopped draining.
    context = multiprocessing.get_context("fork")
    first, second = ProcessDeathSafeLock(), ProcessDeathSafeLock()
    second.acquire()  # this process holds the second lock (its main thread)
    ready, done = context.Event(), context.Value("i", -1)
    child = context.Process(target=_hold_first_then_want_second, args=(first, second, ready, done))
    child.start()
    assert ready.wait(timeout=60)
    taken: list[BaseException | bool] = []

    def want_first() -> None:
        try:
            taken.append(first.acquire())
            first.release()
        except BaseException as exc:
            taken.append(exc)

    asker = threading.Thread(target=want_first)
    asker.start()
    asker.join(timeout=60)
    second.release()  # now the child's waiter gets it
    child.join(timeout=60)

    assert taken == [True]
    assert child.exitcode == 0 and done.value == 0
