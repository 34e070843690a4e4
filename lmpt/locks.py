"""A folder held by one process at a time, the others waiting: for work that two jobs started at once would
otherwise do over each other (generating the synthetic benchmark, pretraining the tiny CLIP, writing one results
file). A run folder's claim, which refuses a second run rather than wait, is ``checkpoint.claim_run_dir``.

The lock is a BSD ``flock`` on the folder itself, so no lock file is left behind; the kernel lets go of it when
the process ends, however it ends. A process forked while it is held (a pool's or a loader's worker) closes its
copy of the folder's descriptor at once: a worker left behind by a killed owner does not keep the folder held.
Where there are no locks (another system, a file system without them, a folder that cannot be opened), nothing
is held and the work goes on as before there were locks.
"""
import os
from contextlib import contextmanager

try:
    import fcntl
except ImportError:  # not POSIX: no locks
    fcntl = None

_HELD = {}  # the descriptors of the folders held -> the pid of the process that holds them


def _close_held_in_child():
    """In a forked child: close the inherited descriptors of held folders (not unlocked: that would let go of
    the parent's lock), so that only the parent holds them."""
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_in_child)


@contextmanager
def folder_locked(folder, waiting=None):
    """Hold an exclusive lock on ``folder`` (made if missing) for the ``with`` block, waiting while another
    process holds it; ``waiting``: a line printed once when it has to wait. Not nested on one folder in one
    process: a lock is an open folder's, so a second one would wait for the first."""
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
            _HELD[fd] = os.getpid()
        except OSError:  # no locks here: nothing held
            if fd is not None:
                os.close(fd)
            fd = None
        except BaseException:  # an interrupt while waiting (or just after): nothing held, nothing left open
            if fd is not None:
                os.close(fd)
            raise
    try:
        yield
    finally:
        if fd is not None and _HELD.get(fd) == os.getpid():  # a forked child closed its copy already
            del _HELD[fd]
            os.close(fd)  # lets go of the lock
