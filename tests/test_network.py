"""The app is local by default: ``make app`` listens on loopback addresses only (the app has no login)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
from _sockets import available, descendants, listening

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_streamlit_config_listens_on_localhost():
    """``streamlit run`` from the repository (and Streamlit's AppTest) read this address."""
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "localhost"


def test_make_app_listens_on_loopback_only():
    if shutil.which("make") is None or not (ROOT / ".venv" / "bin" / "streamlit").exists():
        pytest.skip("needs make and the project's .venv (make test sets it up)")
    if not available():
        pytest.skip("reads the listening sockets from /proc (Linux)")
    port = _free_port()
    # an environment asking for every interface, as a shell may (HOST is the machine's name in some shells,
    # Streamlit reads STREAMLIT_SERVER_ADDRESS): make app's own address decides
    env = {**os.environ, "HOST": "0.0.0.0", "STREAMLIT_SERVER_ADDRESS": "0.0.0.0", "STREAMLIT_SERVER_HEADLESS": "true"}
    # -o: never install here, whatever the stamps' times; the test runs the command `make app` runs
    proc = subprocess.Popen(["make", "--no-print-directory", "-o", ".venv/.installed", "app", f"PORT={port}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None, f"make app ended: {proc.stdout.read().decode(errors='replace')}"
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "the app did not answer its health check within 60 s"
            time.sleep(0.5)
        sockets = listening(descendants(proc.pid))
        assert any(s.port == port for s in sockets), [str(s) for s in sockets]
        assert all(s.loopback for s in sockets), "listening beyond this machine: " + "; ".join(
            str(s) for s in sockets if not s.loopback)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
