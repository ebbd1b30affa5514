"""One writer per output folder: an advisory lock held while a stage writes there.

Two `snmn extract` runs started into the same features/ folder would each write shards for
"CLEVR_val_000007.png" and rewrite the manifest the other is reading. A stage that writes a
folder therefore takes `writer_lock(folder)` first: the second run stops at once with one line
naming the folder and the process that holds it, and the first goes on undisturbed. The lock is
`flock` on `<folder>/.snmn-lock`, so the kernel drops it when its holder dies (a killed run
never leaves a stale lock behind), and the lock file itself holds only the holder's pid. Forked
children share the lock (DataLoader workers of a killed `snmn extract` hold it for the few
seconds they take to notice their parent is gone); `lockf` would avoid that but is released by
any close of the file within the process, so a stage that checked the lock twice would lose it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import DataError

LOCK_FILE = ".snmn-lock"


@contextmanager
def writer_lock(folder: str | Path) -> Iterator[None]:
    """Hold the folder's writer lock for the body; DataError at once if another process has it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "?"
            raise DataError(
                f"{folder}: another process (pid {holder}) is writing this folder; "
                "wait for it to finish, or stop it, and run again"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(descriptor)  # closing the descriptor releases the flock
