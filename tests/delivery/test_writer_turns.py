"""On a SQLite file, writers of every process and thread take turns through one lock."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest
from django.db import connection, transaction

from silo_router.control import delivery
from silo_router.control.models import Payload
from silo_router.writer_turns import writer_lock

from .test_group_commit import envelope

pytestmark = pytest.mark.django_db(transaction=True)

#: How long a writer is seen waiting before the turn is given back.
SEEN_WAITING = 0.3


@pytest.fixture
def other_process() -> Iterator[Callable[[], Callable[[], None]]]:
    """``hold()``: another process takes the database's write turn; call what it returns to let go."""
    if connection.vendor != "sqlite":
        pytest.skip("the turns are SQLite's: PostgreSQL has row-level concurrency")
    holders: list[subprocess.Popen[str]] = []

    def hold() -> Callable[[], None]:
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600); "
                "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.readline()",
                f"{connection.settings_dict['NAME']}-silo-router-lock",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        holders.append(holder)
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"

        def release() -> None:
            assert holder.stdin is not None
            holder.stdin.write("\n")
            holder.stdin.flush()  # it exits, and its lock goes with it

        return release

    yield hold
    for holder in holders:
        holder.kill()
        holder.communicate()  # reaps it and closes its pipes


def in_thread(work: Callable[[], object]) -> tuple[threading.Thread, threading.Event]:
    """Run ``work`` on a thread of its own connection; the event is set when it has returned."""
    done = threading.Event()

    def run() -> None:
        try:
            work()
        finally:
            connection.close()
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, done


def test_a_group_leader_waits_for_another_processs_turn_then_commits(
    other_process: Callable[[], Callable[[], None]],
) -> None:
    release = other_process()
    thread, done = in_thread(lambda: delivery.store([envelope("behind-the-lock")]))
    assert not done.wait(SEEN_WAITING)  # woken when the other process lets go, not polling
    assert not Payload.objects.filter(idempotency_key="behind-the-lock").exists()
    release()
    assert done.wait(10)
    thread.join()
    assert Payload.objects.filter(idempotency_key="behind-the-lock").exists()


def test_a_write_in_autocommit_waits_for_the_turn(other_process: Callable[[], Callable[[], None]]) -> None:
    (pid,) = [str(p.pk) for p in delivery.store([envelope("an-update")])]
    release = other_process()
    thread, done = in_thread(lambda: Payload.objects.filter(pk=pid).update(last_error="written in turn"))
    assert not done.wait(SEEN_WAITING)
    release()
    assert done.wait(10)
    thread.join()
    assert Payload.objects.get(pk=pid).last_error == "written in turn"


def test_reads_and_writes_inside_a_transaction_do_not_wait_for_the_turn(
    other_process: Callable[[], Callable[[], None]],
) -> None:
    (pid,) = [str(p.pk) for p in delivery.store([envelope("in-a-transaction")])]
    release = other_process()
    assert Payload.objects.filter(pk=pid).count() == 1  # a read never waits

    def in_transaction() -> None:
        # Its BEGIN takes SQLite's own lock, which nobody holds; asking for the turn inside
        # a transaction does not wait either (it could deadlock with the turn's holder).
        with transaction.atomic(), writer_lock(connection):
            Payload.objects.filter(pk=pid).update(last_error="written in a transaction")

    thread, done = in_thread(in_transaction)
    assert done.wait(10)
    thread.join()
    assert Payload.objects.get(pk=pid).last_error == "written in a transaction"
    release()


def test_threads_of_one_process_take_turns_and_a_thread_may_take_its_own_turn_again() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("the turns are SQLite's")
    (pid,) = [str(p.pk) for p in delivery.store([envelope("two-threads")])]
    with writer_lock(connection):
        # The holder writes through the same turn without waiting for itself.
        Payload.objects.filter(pk=pid).update(last_error="by the holder")
        thread, done = in_thread(lambda: Payload.objects.filter(pk=pid).update(last_error="by the other thread"))
        assert not done.wait(SEEN_WAITING)  # the other thread waits for this one's turn
        assert Payload.objects.get(pk=pid).last_error == "by the holder"
    assert done.wait(10)
    thread.join()
    assert Payload.objects.get(pk=pid).last_error == "by the other thread"
