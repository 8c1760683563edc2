"""FileLock: one holder at a time across processes; dead, hung and half-written locks taken over once."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import socket
import threading
import time

import pytest

from hydrahead.utils.lock import FileLock, _pid_scope

FORK = multiprocessing.get_context("fork")  # the workers need nothing but this module: no re-import


def hand_lock(path, host: str, pid: int, age_s: float = 0.0, token: str = "feedc0de") -> None:
    """A lock file as another process writes it, its mtime ``age_s`` in the past."""
    record = {"host": host, "pid": pid, "token": token, "acquired": time.time() - age_s}
    if host == socket.gethostname():
        record["pid_scope"] = _pid_scope()
    path.write_text(json.dumps(record))
    age(path, age_s)


def age(path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def dead_pid() -> int:
    """The pid of a child that has exited and been reaped."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def _work_inside(lock_path, folder, rounds: int, barrier=None) -> None:
    """Read-modify-write a counter and log start/end lines under the lock: a race shows in either."""
    if barrier is not None:
        barrier.wait()
    for _ in range(rounds):
        with FileLock(lock_path, poll_s=0.01, timeout_s=20) as lock:
            with open(folder / "log", "a") as fh:
                fh.write(f"start {os.getpid()} {lock.took_over is not None}\n")
            count = int((folder / "count").read_text())
            time.sleep(0.03)
            (folder / "count").write_text(str(count + 1))
            with open(folder / "log", "a") as fh:
                fh.write(f"end {os.getpid()}\n")


def run_workers(lock_path, folder, n: int, rounds: int, barrier=None) -> list[list[str]]:
    (folder / "count").write_text("0")
    procs = [FORK.Process(target=_work_inside, args=(lock_path, folder, rounds, barrier)) for _ in range(n)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    lines = [line.split() for line in (folder / "log").read_text().splitlines()]
    assert int((folder / "count").read_text()) == n * rounds
    assert len(lines) == 2 * n * rounds
    for start, end in zip(lines[::2], lines[1::2]):  # each start is followed by the same worker's end
        assert start[0] == "start" and end == ["end", start[1]]
    assert not (lock_path).exists()
    return lines


def test_processes_take_turns(tmp_path):
    lines = run_workers(tmp_path / "entry.lock", tmp_path, n=4, rounds=3)
    assert {line[2] for line in lines if line[0] == "start"} == {"False"}


def test_a_dead_local_holder_is_taken_over_at_once(tmp_path, caplog):
    lock_path = tmp_path / "sub" / "entry.lock"
    lock_path.parent.mkdir()
    pid = dead_pid()
    hand_lock(lock_path, socket.gethostname(), pid)  # fresh mtime: only the dead pid tells
    with (
        caplog.at_level(logging.INFO, logger="hydrahead.utils.lock"),
        FileLock(lock_path, timeout_s=5) as lock,
    ):
        assert json.loads(lock_path.read_text())["pid"] == os.getpid()
    assert lock.waited_s < 1.0
    assert f"pid {pid}" in lock.took_over and "process is gone" in lock.took_over
    assert any(r.levelname == "WARNING" and "took over" in r.getMessage() for r in caplog.records)
    assert sorted(p.name for p in lock_path.parent.iterdir()) == []  # no claim or temporary left


def test_a_live_local_holder_is_waited_for(tmp_path):
    lock_path = tmp_path / "entry.lock"
    hand_lock(lock_path, socket.gethostname(), os.getppid())  # alive (pytest's parent), not refreshed
    with pytest.raises(TimeoutError):
        FileLock(lock_path, poll_s=0.02, timeout_s=0.2).acquire()


def test_another_hosts_lock_is_waited_on_until_its_mtime_goes_stale(tmp_path, caplog):
    lock_path = tmp_path / "entry.lock"
    hand_lock(lock_path, "node-b", 4242)
    got = {}

    def wait():
        with FileLock(lock_path, stale_after_s=30, poll_s=0.02, timeout_s=10) as lock:
            got["lock"] = lock

    with caplog.at_level(logging.INFO, logger="hydrahead.utils.lock"):
        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.4)
        assert waiter.is_alive() and "lock" not in got  # a fresh lock of another host is respected
        age(lock_path, 31)  # its holder stopped refreshing it
        waiter.join(5)
    assert not waiter.is_alive()
    lock = got["lock"]
    assert 0.3 < lock.waited_s < 3
    assert "node-b pid 4242" in lock.took_over and "not refreshed" in lock.took_over
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert any(level == "INFO" and "waiting" in msg and "node-b pid 4242" in msg for level, msg in messages)
    assert any(level == "WARNING" and "took over" in msg for level, msg in messages)


def test_a_half_written_lock_is_held_until_its_mtime_goes_stale(tmp_path):
    lock_path = tmp_path / "entry.lock"
    lock_path.write_text('{"host": "node-b", "pi')
    with pytest.raises(TimeoutError, match="unknown holder"):
        FileLock(lock_path, stale_after_s=30, poll_s=0.02, timeout_s=0.2).acquire()
    age(lock_path, 31)
    with FileLock(lock_path, stale_after_s=30, timeout_s=2) as lock:
        assert "unreadable" in lock.took_over


def test_the_timeout_names_the_lock_file_and_its_holder(tmp_path):
    lock_path = tmp_path / "entry.lock"
    hand_lock(lock_path, "node-b", 4242)
    start = time.monotonic()
    with pytest.raises(TimeoutError) as err:
        FileLock(lock_path, poll_s=0.05, timeout_s=0.3).acquire()
    assert 0.3 <= time.monotonic() - start < 2
    assert str(lock_path) in str(err.value) and "node-b pid 4242" in str(err.value)
    assert json.loads(lock_path.read_text())["token"] == "feedc0de"  # untouched


def test_the_heartbeat_keeps_a_held_lock_fresh(tmp_path):
    lock_path = tmp_path / "entry.lock"
    with FileLock(lock_path, stale_after_s=0.6, heartbeat_s=0.1):
        age(lock_path, 60)
        time.sleep(0.3)
        assert time.time() - lock_path.stat().st_mtime < 0.5
        with pytest.raises(TimeoutError):  # a waiter in the meantime never sees it stale
            FileLock(lock_path, stale_after_s=0.6, poll_s=0.05, timeout_s=1.0).acquire()
    assert not lock_path.exists()


def test_release_leaves_a_lock_that_was_taken_over(tmp_path, caplog):
    lock_path = tmp_path / "entry.lock"
    hung = FileLock(lock_path, stale_after_s=60)
    hung.acquire()
    age(lock_path, 10)  # as if it stopped refreshing
    with FileLock(lock_path, stale_after_s=5, timeout_s=2) as newer:
        assert newer.took_over and f"pid {os.getpid()}" in newer.took_over
        token = json.loads(lock_path.read_text())["token"]
        with caplog.at_level(logging.WARNING, logger="hydrahead.utils.lock"):
            hung.release()
        assert json.loads(lock_path.read_text())["token"] == token  # still the newer holder's
        assert any("taken over while we held it" in r.getMessage() for r in caplog.records)
    assert not lock_path.exists()


def test_waiters_racing_for_one_stale_lock_take_it_over_exactly_once(tmp_path):
    lock_path = tmp_path / "entry.lock"
    hand_lock(lock_path, "node-b", 4242, age_s=120)
    lines = run_workers(lock_path, tmp_path, n=4, rounds=1, barrier=FORK.Barrier(4))
    assert [line[2] for line in lines if line[0] == "start"].count("True") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["count", "log"]


def test_a_late_waiter_does_not_take_over_the_lock_that_replaced_the_stale_one(tmp_path):
    lock_path = tmp_path / "entry.lock"
    hand_lock(lock_path, "node-b", 4242, age_s=120)
    late = FileLock(lock_path)
    seen = late._look()  # it judged this one stale ...
    assert late._stale(seen)
    with FileLock(lock_path, timeout_s=2) as winner:  # ... and meanwhile another waiter took over
        assert winner.took_over
        assert late._take_over(seen, "stale") is False
        assert json.loads(lock_path.read_text())["token"] == winner._token


def test_a_claim_left_by_a_dead_claimant_does_not_block_the_takeover(tmp_path):
    lock_path = tmp_path / "entry.lock"
    hand_lock(lock_path, "node-b", 4242, age_s=120)
    probe = FileLock(lock_path, stale_after_s=30)
    claim = probe._claim_path("feedc0de", 0)
    claim.touch()
    with pytest.raises(TimeoutError):  # a fresh claim: somebody is taking it over right now
        FileLock(lock_path, stale_after_s=30, poll_s=0.02, timeout_s=0.2).acquire()
    age(claim, 60)  # ... who died doing it
    with FileLock(lock_path, stale_after_s=30, timeout_s=2) as lock:
        assert lock.took_over
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_lock_object_is_not_reentrant(tmp_path):
    lock = FileLock(tmp_path / "entry.lock")
    with lock, pytest.raises(RuntimeError, match="not reentrant"):
        lock.acquire()
