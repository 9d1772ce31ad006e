"""One writer per folder: a lock file names the process writing there (`train` in its work directory,
`prepare` in its data dir).

Two writers on one folder would interleave their files and both report success. The lock file is created
atomically (O_EXCL) and holds the holder's host, PID and start time, so a refusal can name who holds it.
In a bucket (gs://) there is no O_EXCL: the lock is written after checking that none is there, which
guards against a second command started by hand, not against two started within the same second. A lock
left by a process that is gone (same host, PID not alive) is taken over. On a multi-host job only process
0 takes the lock: the job is the holder.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from types import TracebackType

from etils import epath

from musenet_jax.errors import UserError
from musenet_jax.storage import is_url


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (a lock or a staging folder it left is not stale then)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _holder_text(holder: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(holder.get("since", 0))))
    return f"host {holder.get('host', '?')}, PID {holder.get('pid', '?')}, since {since}"


def holder_alive(holder: dict) -> bool:
    """Whether the process a lock file names may still be running (another host's cannot be checked)."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        return process_alive(int(holder["pid"]))
    except (KeyError, TypeError, ValueError):
        return False


class FolderLock:
    """Context manager holding `FOLDER/NAME` for one `command` (`train`, `prepare`); `enabled=False`
    (processes other than 0) does nothing. `what` names the folder in messages ("work directory")."""

    def __init__(
        self,
        folder: str | os.PathLike,
        name: str,
        command: str,
        what: str,
        *,
        enabled: bool = True,
        say: Callable[[str], None] = print,
    ) -> None:
        self.path = epath.Path(folder) / name
        self.command, self.what = command, what
        self.enabled = enabled
        self.say = say
        self._held = False

    def acquire(self) -> None:
        """Takes the lock or raises `UserError` naming the live holder; a dead holder's lock is taken over."""
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        for _ in range(3):  # a takeover races at most with another takeover
            try:
                self._create(me)
            except FileExistsError:
                holder = self._read()
                if holder is None:  # being written right now, or garbage: look again
                    time.sleep(0.05)
                    holder = self._read()
                if holder is not None and not self._stale(holder):
                    raise UserError(
                        f"{self.what} {self.path.parent} is in use by another {self.command} "
                        f"({_holder_text(holder)}); wait for it, stop it, or delete {self.path} if that "
                        "process is gone"
                    ) from None
                what = "unreadable" if holder is None else f"left by {_holder_text(holder)}, not running"
                self.say(f"taking over the stale lock {self.path} ({what})")
                self.path.unlink(missing_ok=True)
                continue
            self._held = True
            return
        raise UserError(f"could not take the lock {self.path}; another {self.command} keeps racing for it")

    def _create(self, me: dict) -> None:
        """Writes the lock; `FileExistsError` when one is there."""
        if is_url(self.path):
            if self.path.exists():
                raise FileExistsError(str(self.path))
            self.path.write_text(json.dumps(me))
            return
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)

    def _read(self) -> dict | None:
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) else None

    @staticmethod
    def _stale(holder: dict) -> bool:
        return not holder_alive(holder)

    def release(self) -> None:
        if self._held:
            holder = self._read()
            if holder is not None and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
