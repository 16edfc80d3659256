"""Start the real studio (`python webui.py ...`) in a subprocess for end-to-end tests."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    out: Path        # the output folder
    log_path: Path   # stdout and stderr (beside the output folder, which the server may serve)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_kb(self) -> int:
        """Resident memory of the server process (VmRSS, kB)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")


@contextlib.contextmanager
def webui(catalog: Path, out: Path, *args: str, env: dict | None = None, timeout: float = 120):
    """A running studio on a free port; `args` are extra webui flags."""
    port = free_port()
    out.mkdir(parents=True, exist_ok=True)
    log_path = out.parent / f"{out.name}.log"
    log = open(log_path, "w")
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    proc = subprocess.Popen([sys.executable, str(ROOT / "webui.py"), "--models", str(catalog), "--port", str(port),
                             "--output-dir", str(out), *args], cwd=ROOT, env=full_env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    server = Server(url, proc, out, log_path)
    try:
        deadline = time.time() + timeout
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except urllib.error.HTTPError:   # answering (e.g. 401 before login): up
                break
            except Exception:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("server did not start:\n" + server.log()[-3000:])
                time.sleep(0.5)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
