"""A lock file that lets N concurrent jobs (several hosts, one NFS filesystem) compute a thing once.

fcntl/flock locks are unreliable on NFS and die with the lock server, so the lock is the file's
existence: ``os.open(O_CREAT | O_EXCL)`` is atomic on local filesystems and NFSv3+. The holder
refreshes the file's mtime (a heartbeat thread), so a waiter can tell a dead or hung holder on
another host (mtime older than ``stale_after_s``) and, on its own host, a holder whose process is
gone. Hosts' clocks must agree to well within ``stale_after_s`` (NTP does).

Taking over a stale lock is race-free between waiters: first the right to take over *that* lock
file (named by its token) is claimed with another O_EXCL file, a "claim"; the claimant looks again
and only then renames a lock file of its own over the stale one (atomic: there is never a moment
without a lock file for a plain waiter to create). A waiter that read the stale lock late finds the
claim taken or, claiming after the takeover finished, another lock in place, and backs off. A
claimant that dies leaves a claim that goes stale in turn; the next waiter claims one level up.
Not reentrant: one FileLock object is entered once at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

_MAX_CLAIM_LEVELS = 8


def _pid_scope() -> str | None:
    """Where a pid means this process: the kernel's boot (a host reusing another's hostname boots
    its own) and the pid namespace (a container with the host's hostname but its own pids, e.g.
    ``docker --network host``). A pid is only judged dead by a reader in the same scope."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot} {os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def _pid_gone(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError, TypeError, OverflowError):  # PermissionError: alive, someone else's
        return False
    return False


class _Seen:
    """One look at the lock file: who holds it (None when unreadable) and which file it is."""

    def __init__(self, holder: dict | None, st: os.stat_result):
        self.holder = holder
        self.mtime = st.st_mtime
        token = holder.get("token") if holder else None
        # an unreadable (half-written) file has no token: name it by inode and mtime instead
        self.identity = str(token) if token else f"ino{st.st_ino}-{st.st_mtime_ns}"

    def describe(self) -> str:
        if self.holder is None:
            return "an unknown holder (unreadable lock file)"
        return f"host {self.holder.get('host')!s} pid {self.holder.get('pid')!s}"


class FileLock:
    """``with FileLock(path, stale_after_s=60.0, poll_s=0.2, heartbeat_s=None, timeout_s=None): ...``

    Holds ``path`` (created beside what it guards, parent folders made as needed) for the block.
    A waiter polls every ``poll_s``; ``timeout_s`` (None: forever) bounds the wait with a
    TimeoutError naming the lock file and its holder. While held, the file's mtime is refreshed
    every ``heartbeat_s`` (default ``stale_after_s / 4``). After entering, ``waited_s`` is how long
    acquiring took and ``took_over`` is None or says whose stale lock was taken over and why.
    """

    def __init__(
        self,
        path: str | Path,
        stale_after_s: float = 60.0,
        poll_s: float = 0.2,
        heartbeat_s: float | None = None,
        timeout_s: float | None = None,
    ):
        if stale_after_s <= 0 or poll_s <= 0:
            raise ValueError(f"FileLock({path}): stale_after_s and poll_s must be > 0")
        self.path = Path(path)
        self.stale_after_s = float(stale_after_s)
        self.poll_s = float(poll_s)
        self.heartbeat_s = float(heartbeat_s) if heartbeat_s is not None else self.stale_after_s / 4
        if self.heartbeat_s <= 0 or self.heartbeat_s >= self.stale_after_s:
            raise ValueError(f"FileLock({path}): heartbeat_s must be > 0 and < stale_after_s")
        self.timeout_s = timeout_s
        self.waited_s: float = 0.0
        self.took_over: str | None = None
        self._token: str | None = None
        self._fd: int | None = None
        self._stop: threading.Event | None = None
        self._heartbeat: threading.Thread | None = None

    # -- public ---------------------------------------------------------------------------------
    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: this FileLock is already held (it is not reentrant)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.took_over = None
        start = time.monotonic()
        announced = False
        while True:
            if self._create():
                break
            seen = self._look()
            if seen is None:  # released between our two calls: try again at once
                continue
            reason = self._stale(seen)
            if reason and self._take_over(seen, reason):
                break
            waited = time.monotonic() - start
            if not announced:
                log.info("waiting for lock %s held by %s", self.path, seen.describe())
                announced = True
            if self.timeout_s is not None and waited >= self.timeout_s:
                raise TimeoutError(
                    f"{self.path}: still held by {seen.describe()} after waiting {waited:.1f}s "
                    f"(timeout_s={self.timeout_s})"
                )
            pause = self.poll_s
            if self.timeout_s is not None:
                pause = max(0.0, min(pause, self.timeout_s - waited))
            time.sleep(pause)
        self.waited_s = time.monotonic() - start
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(
            target=self._beat, args=(self._fd, self._stop), name=f"FileLock {self.path.name}", daemon=True
        )
        self._heartbeat.start()

    def release(self) -> None:
        """Stop the heartbeat; remove the lock file unless a waiter took it over meanwhile."""
        if self._fd is None:
            return
        self._stop.set()
        self._heartbeat.join()
        os.close(self._fd)  # before unlinking: NFS keeps an open unlinked file as a .nfs* leftover
        self._fd = None
        seen = self._look()
        if seen is not None and seen.identity == self._token:
            self.path.unlink(missing_ok=True)
        else:
            now = "free" if seen is None else f"held by {seen.describe()}"
            log.warning("lock %s was taken over while we held it (now %s); left as it is", self.path, now)
        self._token = None

    # -- internals ------------------------------------------------------------------------------
    def _create(self, path: Path | None = None) -> bool:
        """Create the lock file (O_EXCL: exactly one creator wins) and write who holds it."""
        path = path or self.path
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # 0o666 & ~umask
        except FileExistsError:
            return False
        token = secrets.token_hex(8)
        record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_scope": _pid_scope(),
            "token": token,
            "acquired": time.time(),
        }
        try:
            os.write(fd, json.dumps(record).encode())  # one write: a reader sees all or (mostly) nothing
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        self._fd, self._token = fd, token
        return True

    def _look(self, path: Path | None = None) -> _Seen | None:
        """The lock file as it is now, or None when there is none. Opened afresh every time: on NFS
        the open revalidates the attributes, and the mtime and content come from one file."""
        try:
            fd = os.open(path or self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(fd)
            raw = os.read(fd, 1 << 16)
        finally:
            os.close(fd)
        try:
            holder = json.loads(raw)
        except ValueError:
            holder = None
        return _Seen(holder if isinstance(holder, dict) else None, st)

    def _stale(self, seen: _Seen) -> str | None:
        """Why the lock in ``seen`` may be taken over, or None while its holder looks alive."""
        holder = seen.holder
        if (
            holder is not None
            and holder.get("host") == socket.gethostname()
            and holder.get("pid_scope", _pid_scope()) == _pid_scope()  # unrecorded: assume ours
            and _pid_gone(holder.get("pid"))
        ):
            return "its process is gone"
        age = time.time() - seen.mtime
        if age > self.stale_after_s:
            return f"not refreshed for {age:.0f}s (stale after {self.stale_after_s:g}s)"
        return None

    def _take_over(self, seen: _Seen, reason: str) -> bool:
        """Replace the stale lock ``seen`` by ours; False when another waiter is at it, or won."""
        claim = self._claim(seen.identity)
        if claim is None:
            return False
        try:
            again = self._look()
            if again is None or again.identity != seen.identity or not self._stale(again):
                return False  # released, replaced or alive again since we looked
            # ours is written beside it, then renamed over it: never a moment without a lock file
            fresh = self.path.with_name(f"{self.path.name}.new-{secrets.token_hex(6)}")
            if not self._create(fresh):
                return False
            try:
                os.rename(fresh, self.path)
            except BaseException:
                os.close(self._fd)
                self._fd = self._token = None
                fresh.unlink(missing_ok=True)
                raise
            self.took_over = f"{seen.describe()}: {reason}"
            log.warning("took over lock %s from %s", self.path, self.took_over)
            return True
        finally:
            for level in range(claim + 1):
                self._claim_path(seen.identity, level).unlink(missing_ok=True)

    def _claim_path(self, identity: str, level: int) -> Path:
        tag = hashlib.sha1(identity.encode()).hexdigest()[:16]
        return self.path.with_name(f"{self.path.name}.claim-{tag}.{level}")

    def _claim(self, identity: str) -> int | None:
        """The level of the claim we made on the lock ``identity``; None when a live claim exists."""
        for level in range(_MAX_CLAIM_LEVELS):
            claim = self._claim_path(identity, level)
            try:
                os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
                return level
            except FileExistsError:
                pass
            try:
                age = time.time() - claim.stat().st_mtime
            except FileNotFoundError:
                return None  # its claimant just finished: look at the lock again
            if age <= self.stale_after_s:
                return None  # somebody is taking it over right now
        log.error(
            "lock %s: %d dead claims on one stale lock; remove %s.claim-* by hand",
            self.path,
            _MAX_CLAIM_LEVELS,
            self.path.name,
        )
        return None

    def _beat(self, fd: int, stop: threading.Event) -> None:
        """Refresh our lock file's mtime (through its descriptor: ours, even if renamed away)."""
        while not stop.wait(self.heartbeat_s):
            try:
                os.utime(fd if os.utime in os.supports_fd else self.path)
            except OSError as err:
                log.warning("lock %s: heartbeat failed (%s)", self.path, err)
