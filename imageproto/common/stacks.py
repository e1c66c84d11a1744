"""
A running command's thread stacks on demand.

C{kill -USR2 PID} makes a receiver, sender or worker run by C{twistd -n}
write every thread's Python stack to the standard error it was started
with (L{faulthandler}, which answers even while the reactor thread is
stuck): the way to ask a process that has stopped answering what it is
doing.  A daemonized twistd has pointed standard error at /dev/null, so
the dump is lost there; a process started without a standard error
ignores the signal.  SIGUSR1 stays twistd's (it rotates the log file).
"""

from __future__ import annotations

import faulthandler
import signal
import sys

__all__ = ["DUMP_SIGNAL", "dumpStacksOnSignal"]

DUMP_SIGNAL = signal.SIGUSR2


def dumpStacksOnSignal(file=None) -> None:
    """
    From now on, L{DUMP_SIGNAL} writes every thread's stack to C{file}
    (the process's original standard error by default).  Without such a
    file the signal is ignored, rather than ending the process as it
    would by default.
    """
    file = file or sys.__stderr__
    try:
        if file is None:
            raise ValueError("no standard error")
        faulthandler.register(DUMP_SIGNAL, file=file, all_threads=True)
    except (RuntimeError, ValueError, OSError):
        # A closed or fileless standard error: nowhere to write a dump.
        signal.signal(DUMP_SIGNAL, signal.SIG_IGN)
