"""Start `onnxkit serve` in a child process and wait until it is ready (for scripts and tests).

with ServerProcess(["digits.onnx"]) as server:
    reply = server.infer("digits", {"x": rows})
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np

from onnxkit.errors import OnnxkitError

_URL = re.compile(r"serving .* at (http://\S+)/v2")
_GRPC = re.compile(r"gRPC .* at (\S+)")


class ServerProcess:
    """`onnxkit serve MODELS --port 0` on 127.0.0.1 in a child process."""

    def __init__(self, models: list[str], *options: str, timeout: float = 60.0) -> None:
        self.command = [sys.executable, "-m", "onnxkit", "serve", *models, "--host", "127.0.0.1"]
        self.command += ["--port", "0", *options]  # a later --port in options wins
        self.timeout = timeout
        self.url = ""
        self.grpc = ""  # host:port of the gRPC endpoint, when started with --grpc-port
        self.log: list[str] = []  # the server's stderr lines
        self.process: subprocess.Popen | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server; return once /v2/health/ready answers 200."""
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + self.timeout
        while not self.url:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.stop()
                raise OnnxkitError(f"the server did not start: {' | '.join(self.log[-3:])}")
            if match := _GRPC.search(line):
                self.grpc = match.group(1)
            if match := _URL.search(line):
                self.url = match.group(1)
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=5) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise OnnxkitError(f"the server at {self.url} did not become ready in {self.timeout:g} s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send `sig` (a clean shutdown), wait for the exit, and return the exit status."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def infer(self, model: str, inputs: dict[str, np.ndarray], **request: Any) -> dict[str, Any]:
        """POST one V2 infer request built from numpy arrays; return the decoded reply."""
        body = {
            "inputs": [
                {"name": name, "shape": list(a.shape), "datatype": _datatype(a), "data": a.ravel().tolist()}
                for name, a in inputs.items()
            ],
            **request,
        }
        call = urllib.request.Request(
            f"{self.url}/v2/models/{model}/infer", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(call, timeout=self.timeout) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as e:
            raise OnnxkitError(f"the server refused the request ({e.code}): {e.read().decode()}") from e

    def _drain(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line.rstrip())
            self._lines.put(line)
        self._lines.put(None)


def _datatype(array: np.ndarray) -> str:
    kind = {"f": "FP", "i": "INT", "u": "UINT"}.get(array.dtype.kind)
    if array.dtype.kind == "b":
        return "BOOL"
    if kind is None:
        raise OnnxkitError(f"cannot send {array.dtype} arrays; use numbers or booleans")
    return f"{kind}{array.dtype.itemsize * 8}"
