"""
A running command's thread stacks on demand.

C{kill -USR2 PID} makes a receiver, sender or worker run by twistd write
every thread's Python stack to its standard error (L{faulthandler}, which
needs neither the reactor nor the GIL-holding thread to cooperate): the way
to ask a process that has stopped answering what it is doing.  SIGUSR1 is
twistd's own (it reopens the log file).
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
    (the process's original standard error by default).
    """
    faulthandler.register(DUMP_SIGNAL, file=file or sys.__stderr__, all_threads=True)
