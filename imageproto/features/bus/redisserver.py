# -*- test-case-name: tests.test_bus_redis -*-
"""
A throwaway C{redis-server} for tests and benchmarks: its own loopback port
and temporary directory, persistence off unless asked for, started and
stopped (or SIGKILLed and started again) on demand.

It never touches a system-wide Redis: no configuration file, no service
manager, nothing outside its directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

from imageproto.tap import freePort

__all__ = ["RedisServer", "redisServerBinary", "MISSING"]

MISSING = (
    "redis-server is not installed (scripts/test installs it; by hand: "
    "apt-get install redis-server)"
)


def redisServerBinary() -> str | None:
    """
    The path of C{redis-server}, or C{None} when it is not installed.
    """
    return shutil.which("redis-server")


class RedisServer:
    """
    One C{redis-server} process.

    @param appendonly: keep an append-only file (C{appendfsync always}), so
        that a restart keeps every acknowledged write.
    @ivar url: C{redis://127.0.0.1:PORT/0}.
    """

    def __init__(self, appendonly: bool = False, directory: str | None = None) -> None:
        self.appendonly = appendonly
        self.directory = directory or tempfile.mkdtemp(prefix="imageproto-redis-")
        self.port = freePort()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        args = [
            redisServerBinary() or "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", self.directory,
            "--save", "",
            "--daemonize", "no",
            "--logfile", os.path.join(self.directory, "redis.log"),
            "--appendonly", "yes" if self.appendonly else "no",
        ]
        if self.appendonly:
            args += ["--appendfsync", "always"]
        return args

    def spawn(self) -> None:
        """
        Start the server without waiting for it (poll L{ping}).
        """
        self.process = subprocess.Popen(
            self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def start(self, timeout: float = 20.0) -> None:
        """
        Start the server and wait (polling its port, at most C{timeout}
        seconds) until it answers PING.  Meant for setup code outside the
        reactor (C{setUpClass}, a bench's start): it blocks.
        """
        self.spawn()
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer: {self.log()}")
            time.sleep(0.02)

    def ping(self) -> bool:
        """
        Whether the server answers PING now (a plain socket, no client).
        """
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, kill: bool = False) -> None:
        """
        Stop the server: SIGTERM (it writes nothing, persistence being off,
        or flushes its append-only file), or SIGKILL with C{kill}.
        """
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def cleanup(self) -> None:
        """
        Stop the server and remove its directory.
        """
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def log(self) -> str:
        try:
            with open(os.path.join(self.directory, "redis.log"), encoding="utf-8") as f:
                return f.read()[-2000:]
        except OSError:
            return "(no log)"
