"""Ctrl-C and SIGTERM: SIGTERM raised as an exception, interrupts held back while a file is written, and the exit
status of a script an interrupt stopped.

``sigterm_as_interrupt`` turns SIGTERM into :class:`Interrupted` (a KeyboardInterrupt), so a pre-empted run
stops as cleanly as one stopped with Ctrl-C; ``interrupts_deferred`` holds both back until the writes in its
block are done; ``interrupt_status`` is the exit status a script ends with (130, 143). What the scripts say
and do when a run is interrupted (``run_resumable``, ``report_errors``) is in ``lmpt/cli.py``.
"""
import signal
import threading
from contextlib import contextmanager


class Interrupted(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that the run stops cleanly; ``signum``: the signal's number."""

    def __init__(self, signum=signal.SIGTERM):
        super().__init__(int(signum))
        self.signum = int(signum)

    def __str__(self):
        return f"signal {self.signum}"


def interrupt_status(error):
    """The exit status of a script that ``error`` (a KeyboardInterrupt) stopped: 128 + the signal's number, as a
    shell reports a process that signal ended: 130 for Ctrl-C (SIGINT), 143 for SIGTERM (``Interrupted``)."""
    return 128 + getattr(error, "signum", int(signal.SIGINT))


@contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises :class:`Interrupted` like Ctrl-C raises KeyboardInterrupt."""
    def handler(signum, frame):
        raise Interrupted(signum)
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_DEFERRING = []  # non-empty while interrupts_deferred holds the signals back (it nests)


@contextmanager
def interrupts_deferred():
    """Within the block, Ctrl-C (SIGINT) and SIGTERM are held back, then delivered when it ends, to the handlers
    that were there before (Ctrl-C's KeyboardInterrupt, ``sigterm_as_interrupt``'s, or the default).
    For writes that must finish: torch.save turns an interrupt inside its file writer into an error of its
    own ("unexpected pos …"), which would lose the file and read as a failed disk. Blocks nest; outside the
    main thread, where no handler can be set, signals are left alone."""
    if _DEFERRING or threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    previous = {signum: signal.signal(signum, lambda number, frame: pending.append(number))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    _DEFERRING.append(True)
    try:
        yield
    finally:
        _DEFERRING.pop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if pending:
            signal.raise_signal(pending[0])  # as if it came now
