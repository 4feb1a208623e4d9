"""Start the app and a browser, the one way the benchmark, the browser test and the load
test do it.

    from tools.serve import chromium, streamlit_server

    with streamlit_server() as server, chromium() as browser:
        page = browser.new_page()
        page.goto(server.url + "/translate")

`streamlit_server` runs `streamlit run app.py` on a free port of 127.0.0.1 (headless, no
usage statistics), waits until its health check answers HTTP 200 and yields a `Server`
(url, port, process); on leaving it stops the server. `chromium` / `async_chromium` launch
Debian's /usr/bin/chromium through Playwright (never a downloaded browser) with the flags
that keep it off the network. Playwright is imported only when a browser is launched;
Streamlit only ever runs in the child process."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
# Without the network flags Chromium keeps trying to reach the internet.
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")


def chromium_path() -> str | None:
    """Debian's Chromium, if installed (`apt-get install chromium`)."""
    for path in (CHROMIUM, shutil.which("chromium")):
        if path and os.path.exists(path):
            return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def streamlit_command(port: int, app: str = "app.py") -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", app, "--server.headless", "true",
            "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"]


@dataclass
class Server:
    url: str                      # http://127.0.0.1:PORT
    port: int
    process: subprocess.Popen | None
    log: object = None            # a file holding what the server printed (capture_output=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        """What the server printed so far ("" unless started with capture_output=True)."""
        if self.log is None:
            return ""
        self.log.seek(0)
        return self.log.read()


def wait_healthy(url: str, process: subprocess.Popen | None = None, timeout: float = 60.0,
                 interval: float = 0.05) -> float:
    """Poll `url`/_stcore/health until it answers 200; seconds waited. RuntimeError when the
    process exits first or `timeout` passes."""
    t0 = time.perf_counter()
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            pass
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {process.returncode} before answering")
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"streamlit did not answer at {url} within {timeout:.0f} s")
        time.sleep(interval)


@contextlib.contextmanager
def streamlit_server(app: str = "app.py", cwd: str | Path = ROOT, port: int | None = None, timeout: float = 60.0,
                     env: dict | None = None, capture_output: bool = False):
    """`streamlit run app` on a free port; yields a Server once it answers HTTP 200, and
    stops it afterwards. Output goes nowhere unless `capture_output` (then to a temporary
    file, `Server.output()`, and into the error raised on a failed start)."""
    port = port or free_port()
    server = Server(url=f"http://127.0.0.1:{port}", port=port, process=None,
                    log=tempfile.TemporaryFile("w+", encoding="utf-8") if capture_output else None)
    proc = server.process = subprocess.Popen(streamlit_command(port, app), cwd=cwd, env=env,
                                             stdout=server.log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        try:
            wait_healthy(server.url, proc, timeout)
        except RuntimeError as e:
            proc.kill()
            proc.wait(10)
            printed = server.output()
            raise RuntimeError(f"{e}{': ' + printed[-2000:] if printed else ''}") from None
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if server.log is not None:
            server.log.close()


def launch_options(**extra) -> dict:
    """Keyword arguments for Playwright's `chromium.launch` (sync or async)."""
    path = chromium_path()
    if path is None:
        raise RuntimeError("Debian's chromium is needed: apt-get install chromium (never `playwright install`)")
    return {"executable_path": path, "args": list(CHROMIUM_ARGS), **extra}


@contextlib.contextmanager
def chromium(**launch):
    """A headless Chromium (Playwright's sync API): yields the Browser, closes it afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(**launch_options(**launch))
        try:
            yield browser
        finally:
            browser.close()


@contextlib.asynccontextmanager
async def async_chromium(**launch):
    """The same with Playwright's async API (for many concurrent sessions)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(**launch_options(**launch))
        try:
            yield browser
        finally:
            await browser.close()
