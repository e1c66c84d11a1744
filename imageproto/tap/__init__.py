"""
twistd entry points, one module per plugin (C{receiver}, C{sender}), and
L{twistdCommand} for programs and tests that start them as processes.
"""

import sys

__all__ = ["twistdCommand"]

# twistd has no "python -m" entry point ("python -m twisted" is "twist"), so
# run its console-script function under this interpreter; that way the
# plugins of this very environment are found, whatever PATH says.
_RUN_TWISTD = (
    "import sys; sys.argv[0] = 'twistd'; "
    "from twisted.scripts.twistd import run; run()"
)


def twistdCommand(*args: str) -> list[str]:
    """
    The argv that runs C{twistd -n <args>} with the current interpreter.

    C{--pidfile=} is passed so that several twistd processes may share a
    working directory.
    """
    return [sys.executable, "-c", _RUN_TWISTD, "-n", "--pidfile=", *args]
