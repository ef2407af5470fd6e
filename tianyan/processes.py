"""Starting, watching and stopping tianyan's own services (the demo, the benchmarks, the
tests): local ports, waits that follow progress, and a process group that is stopped as one.

A command that starts services runs them in a :class:`ServiceGroup`. Every child is in the
group's process group and is asked by the kernel to stop when the command dies (Linux's
parent-death signal), so SIGTERM, SIGINT, a failure or even SIGKILL of the command leaves no
service behind to claim another run's work.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import IO, TypeVar

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1
# Loaded here, in the parent: a child between fork and exec should only call it.
_LIBC = ctypes.CDLL(None, use_errno=True)


class WaitTimeout(RuntimeError):
    """A condition did not hold in time; the message says what was awaited."""


class Stalled(WaitTimeout):
    """Work stopped advancing before it was done; the message names the stage and where it
    stood."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    """Something accepts connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], T], timeout_s: float, what: str, poll_s: float = 0.2) -> T:
    """``check()``'s first truthy result, polling; :class:`WaitTimeout` naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


def wait_for_progress(
    progress: Callable[[], Hashable],
    done: Callable[[Hashable], bool],
    *,
    stall_s: float,
    what: str,
    poll_s: float = 0.5,
    alive: Callable[[], str | None] | None = None,
) -> Hashable:
    """Wait while work advances: until ``done(progress())``, failing only when the progress
    value has not changed for ``stall_s`` seconds.

    ``progress`` returns where the work stands (a count, a tuple of counts); any change counts
    as progress, so a slow machine only makes the wait longer. ``alive``, if given, returns a
    reason when the work can no longer finish (a service exited), which fails at once.

    Raises
    ------
    Stalled
        naming ``what`` and the last progress value, when nothing moved for ``stall_s``, or
        ``alive`` gave a reason.
    """
    last = progress()
    moved_at = time.monotonic()
    while not done(last):
        if alive is not None and (dead := alive()) is not None:
            raise Stalled(f"{what}: {dead} (at {last})")
        if time.monotonic() - moved_at > stall_s:
            raise Stalled(f"{what}: nothing moved for {stall_s:.0f} s; stuck at {last}")
        time.sleep(poll_s)
        now = progress()
        if now != last:
            last, moved_at = now, time.monotonic()
    return last


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 30) -> None:
    """Stop ``proc`` with ``sig`` (SIGTERM: let it shut down cleanly), killing it if it has
    not exited within ``timeout_s``."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _die_with_parent() -> None:
    """In the child, before exec: the kernel sends SIGTERM when the parent dies (the thread
    that started it, so services are started from the main thread)."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class ServiceGroup:
    """Services started by one command, in one process group, stopped together.

    Use as a context manager, or through :func:`services`. Each service is a command line
    with its environment and log file; :meth:`exited` tells whether any has died.
    """

    def __init__(self, *, stop_timeout_s: float = 20.0) -> None:
        self.stop_timeout_s = stop_timeout_s
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._pgid: int | None = None

    def start(
        self,
        name: str,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        log: IO[bytes] | Path,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``args`` as the service ``name`` (unique in the group), in ``cwd``."""
        if name in self.procs:
            raise ValueError(f"a service named {name!r} is already in this group")
        out = log.open("ab") if isinstance(log, Path) else log
        if not any(p.poll() is None for p in self.procs.values()):
            self._pgid = None  # every member has exited: their group is gone, start a new one
        pgid = self._pgid

        def setup() -> None:
            os.setpgid(0, pgid or 0)
            _die_with_parent()

        global _caught_signal
        _caught_signal = None
        proc = subprocess.Popen(
            list(args),
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=setup,
            cwd=cwd,
        )
        if isinstance(log, Path):
            out.close()  # the child holds its own descriptor
        if self._pgid is None:
            self._pgid = proc.pid
        self.procs[name] = proc
        if _caught_signal is not None:  # a signal whose exception the fork swallowed
            raise Interrupted(128 + _caught_signal)
        return proc

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop one service (SIGTERM, then SIGKILL after the group's timeout)."""
        stop_process(self.procs.pop(name), sig, self.stop_timeout_s)

    def exited(self) -> str | None:
        """``"<name> exited with <code>"`` for the first service that is no longer running."""
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is not None:
                return f"{name} exited with {code}"
        return None

    def stop_all(self) -> None:
        """SIGTERM to the whole group, then SIGKILL to whatever still runs after the timeout."""
        if self._pgid is not None:
            with suppress(ProcessLookupError):
                os.killpg(self._pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for proc in self.procs.values():
            with suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
        if self._pgid is not None:
            with suppress(ProcessLookupError):
                os.killpg(self._pgid, signal.SIGKILL)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        self.procs.clear()

    def __enter__(self) -> ServiceGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


class Interrupted(SystemExit):
    """The command got SIGTERM or SIGINT; raised so that its ``finally`` blocks run."""


#: The signal :func:`services` caught while a service was being started. Its handler
#: raises :class:`Interrupted`, but one that runs inside the fork's callbacks (logging's
#: at-fork lock release) has its exception ignored by Python: a demo sent SIGTERM as it
#: started its gateway ran to its end. :meth:`ServiceGroup.start` raises it after the fork.
_caught_signal: int | None = None


@contextmanager
def services(*, stop_timeout_s: float = 20.0) -> Iterator[ServiceGroup]:
    """A :class:`ServiceGroup` stopped on exit, with SIGTERM and SIGINT turned into
    :class:`Interrupted` (exit status 128 + signal) meanwhile, so the group is stopped
    whichever way the command ends."""

    def interrupted(signum: int, _frame: FrameType | None) -> None:
        global _caught_signal
        _caught_signal = signum
        raise Interrupted(128 + signum)

    previous = {s: signal.signal(s, interrupted) for s in (signal.SIGTERM, signal.SIGINT)}
    group = ServiceGroup(stop_timeout_s=stop_timeout_s)
    try:
        yield group
    finally:
        # A second signal while stopping must not cut the stop short.
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        try:
            group.stop_all()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
