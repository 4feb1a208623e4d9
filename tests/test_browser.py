"""A real browser against `streamlit run app.py`: Debian's Chromium driven by Playwright.

Screenshots go to screenshots/ (git-ignored) for a person to look at."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = ROOT / "screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAGES = [("translate", "Translate"), ("reverse", "Reverse"), ("compare", "Compare models"),
         ("teacher_forcing", "Teacher forcing"), ("beam_search", "Beam search"), ("", "Home")]

if not os.path.exists(CHROMIUM):
    if os.environ.get("ATTENTION_LAB_SKIP_BROWSER") == "1":
        pytest.skip("no chromium and ATTENTION_LAB_SKIP_BROWSER=1", allow_module_level=True)
    raise RuntimeError("Debian's chromium is needed for the browser test: apt-get install chromium "
                       "(scripts/test.sh does this), or set ATTENTION_LAB_SKIP_BROWSER=1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.address",
         "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError("streamlit did not start: " + (proc.stdout.read() if proc.stdout else ""))
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 2200})
        yield pg
        browser.close()


def assert_no_exception(pg, where: str):
    assert pg.locator("[data-testid='stException']").count() == 0, f"exception box on {where}"


def wait_idle(pg, timeout=60_000):
    """Streamlit shows a status widget while a script runs; wait until it is gone."""
    pg.wait_for_timeout(300)
    pg.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)


def test_translate_step_through_and_every_page(server, page):
    pg = page
    pg.goto(f"{server}/translate", wait_until="domcontentloaded")
    box = pg.get_by_label("German sentence")
    box.wait_for(timeout=60_000)
    box.fill("Zwei Hunde spielen im Schnee.")
    box.press("Control+Enter")
    wait_idle(pg)
    pg.get_by_text("Attention: where the decoder looked").first.wait_for(timeout=60_000)
    assert "Zwei" in pg.url and "text=" in pg.url  # the input lives in the URL
    # a deep link as the first request of a fresh server still opens inside the app's navigation
    nav = pg.locator("[data-testid='stSidebarNav']").inner_text()
    assert "Compare models" in nav and "teacher forcing" not in nav
    assert_no_exception(pg, "translate")
    pg.screenshot(path=str(SHOTS / "translate-heatmap.png"))

    pg.get_by_role("tab", name="Step by step").click()
    pg.get_by_text("step 1/").first.wait_for(timeout=30_000)
    pg.locator(".updatemenu-button").first.click()  # ▶ play
    pg.get_by_text("step 3/").first.wait_for(timeout=30_000)
    pg.screenshot(path=str(SHOTS / "translate-steps.png"))
    assert_no_exception(pg, "translate steps")

    for path, title in PAGES:
        pg.get_by_role("link", name=title).first.click()
        wait_idle(pg, timeout=120_000)
        pg.wait_for_timeout(1500)
        assert_no_exception(pg, title)
        pg.screenshot(path=str(SHOTS / f"page-{path or 'home'}.png"))
