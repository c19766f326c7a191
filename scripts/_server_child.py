"""A ``qwen3-rerank serve`` child process on a free loopback port, for the benchmark scripts.

Shared by ``bench_connections.py`` and ``bench_long_run.py``: start, wait for ``/ready``, read the
process's resident memory and open descriptors from ``/proc``, stop with SIGTERM.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerChild:
    """``python -m qwen3_rerank serve --model MODEL --dtype DTYPE ARGS...`` on 127.0.0.1."""

    def __init__(self, model: str, dtype: str, *args: str, start_timeout: float = 300.0) -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            sys.executable,
            "-m",
            "qwen3_rerank",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--model",
            model,
            "--dtype",
            dtype,
            "--log-level",
            "warning",
            *args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN3_RERANK_")}
        self._log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + start_timeout
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"server not ready after {start_timeout:g} s")
            time.sleep(0.2)

    @property
    def pid(self) -> int:
        return self.process.pid

    def open_fds(self) -> int:
        """Descriptors the server process holds open now."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_bytes(self) -> int:
        """Resident memory of the server process now (``VmRSS``)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS line")

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> int | None:
        """SIGTERM, then wait (kill after 60 s); the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
