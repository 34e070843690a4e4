"""A folder held by one process at a time, the others waiting: for work that two jobs started at once would
otherwise do over each other (generating the synthetic benchmark, pretraining the tiny CLIP, writing one results
file). A run folder's claim, which refuses a second run rather than wait, is ``checkpoint.claim_run_dir``.

The lock is a BSD ``flock`` on the folder itself, so no lock file is left behind; the kernel lets go of it when
the process ends, however it ends. Where there are no locks (another system, a file system without them, a
folder that cannot be opened), nothing is held and the work goes on as before there were locks.
"""
import os
from contextlib import contextmanager

try:
    import fcntl
except ImportError:  # not POSIX: no locks
    fcntl = None


@contextmanager
def folder_locked(folder, waiting=None):
    """Hold an exclusive lock on ``folder`` (made if missing) for the ``with`` block, waiting while another
    process holds it; ``waiting``: a line printed once when it has to wait."""
    fd = None
    if fcntl is not None:
        try:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting:
                    print(waiting, flush=True)
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # no locks here: nothing held
            if fd is not None:
                os.close(fd)
            fd = None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # lets go of the lock
