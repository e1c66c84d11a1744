"""
twistd entry points, one module per plugin (C{receiver}, C{sender}), and
helpers for programs and tests that start them as processes.
"""

import signal
import socket
import subprocess
import sys

from twisted.python import usage

__all__ = ["CommandOptions", "commandReactor", "twistdCommand", "freePort", "listening", "stopProcess"]


class CommandOptions(usage.Options):
    """
    Options of a twistd plugin command that report a usage error briefly.

    twistd answers a plugin's C{UsageError} by printing the whole help (some
    60 lines) and only then the error.  Run as a twistd subcommand, this
    prints the error first and alone on stderr, then the command's usage
    line and where to find the options, and exits with status 1.  Parsed
    directly (a test, an embedding program) it raises C{UsageError} as
    usual.
    """

    def parseOptions(self, options=None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if getattr(self, "parent", None) is None:
                raise
            command = self.parent.subCommand
            sys.stderr.write(
                f"twistd {command}: {e}\n"
                f"{self.getSynopsis()}\n"
                f"Run 'twistd {command} --help' for the options.\n"
            )
            sys.stderr.flush()
            raise SystemExit(1)

def commandReactor(reactor=None):
    """
    The reactor a command's C{makeService} builds on: C{reactor} when given
    (a test's), else the global one.  Given none, the command is being run
    by twistd, so from then on C{kill -USR2} shows what each of its threads
    is doing (L{imageproto.common.stacks}).
    """
    from imageproto.common.reactor import defaultReactor
    from imageproto.common.stacks import dumpStacksOnSignal

    if reactor is None:
        dumpStacksOnSignal()
    return defaultReactor(reactor)


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


def freePort(host: str = "127.0.0.1") -> int:
    """
    A TCP port on C{host} that nothing listens on right now.
    """
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def listening(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """
    Whether something accepts TCP connections on C{host}:C{port} now.
    """
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def stopProcess(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """
    Stop a child started with C{subprocess}: SIGTERM (twistd shuts down
    cleanly on it), then SIGKILL if it is still running after C{timeout}
    seconds; either way it is reaped.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
