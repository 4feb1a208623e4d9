"""Bounded load test: N real browser sessions (Chromium contexts driven by Playwright)
translating and stepping against one `streamlit run app.py` on 127.0.0.1 for a fixed time,
then it stops by itself.

    .venv/bin/python scripts/loadtest.py [--sessions 20] [--seconds 60] [--json]

All sessions first open the Translate page at once (a shared link; timed apart), then
each loops for the given time: type a new German sentence, wait until the page shows its new
translation (the answer time), open "Step by step" and press play, go back to the heatmap.
Reports interactions served, errors (timeouts or an exception box on a page), p50/p95
answer time, and the server process's resident memory at the start (after one warm-up
session loaded the model) and at the end. The server and Chromium are started by
tools.serve, as in the benchmark and the browser test."""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.serve import async_chromium, streamlit_server  # noqa: E402 - after the path is set

SENTENCES = ["Ein Mann fährt mit dem Fahrrad.", "Zwei Hunde spielen im Schnee.", "Eine Frau liest ein Buch.",
             "Kinder spielen Fußball auf einer Wiese.", "Ein kleines Mädchen isst ein Eis.", "Der Hund schläft.",
             "Ein Mann mit einem Hut singt.", "Zwei Frauen gehen die Straße entlang.", "Ein Junge springt ins Wasser.",
             "Eine Gruppe von Menschen steht vor einem Gebäude."]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def open_session(browser, url: str, idx: int, load_times: list, errors: list):
    """A browser session opens the Translate page on its own sentence (a shared link)."""
    ctx = await browser.new_context(viewport={"width": 1280, "height": 1400})
    page = await ctx.new_page()
    t0 = time.perf_counter()
    try:
        await page.goto(f"{url}/translate?text={SENTENCES[idx % len(SENTENCES)]}&model=translate-bahdanau")
        await page.get_by_text("Attention: where the decoder looked").first.wait_for(timeout=300_000)
        load_times.append(time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001
        errors.append(f"session {idx} open: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
    return ctx, page


async def interact(page, idx: int, deadline: float, times: list, errors: list) -> None:
    box = page.get_by_label("German sentence")
    i = idx * 1000
    while time.monotonic() < deadline:
        i += 1
        text = f"{SENTENCES[i % len(SENTENCES)]} ({i})"   # a new input each time: no cache hit
        t0 = time.perf_counter()
        try:
            await box.fill(text)
            await box.press("Control+Enter")
            # answered when the heatmap drawn in this browser has the new input's number on its source axis
            await page.wait_for_function(
                "n => [...document.querySelectorAll('.xtick text')].some(e => e.textContent.split(' ')[0] === n)",
                arg=str(i), timeout=60_000)
            times.append(time.perf_counter() - t0)
            if await page.locator("[data-testid='stException']").count():
                errors.append(f"session {idx}: exception box")
            await page.get_by_role("tab", name="Step by step").click()
            await page.locator(".updatemenu-button").first.click(timeout=10_000)   # play (in the browser)
            await page.wait_for_timeout(500)
            await page.get_by_role("tab", name="Alignment heatmap").click()
        except Exception as e:  # noqa: BLE001 - count it, keep the session going
            errors.append(f"session {idx}: {type(e).__name__}: {str(e).splitlines()[0][:120]}")


async def run(sessions: int, seconds: float) -> dict:
    with streamlit_server(cwd=ROOT, timeout=60) as server:
        url = server.url
        async with async_chromium() as browser:
            warm_ctx, _ = await open_session(browser, url, 0, [], [])   # loads the model once
            await warm_ctx.close()
            rss_start = rss_mib(server.pid)
            load_times: list = []
            times: list = []
            errors: list = []
            opened = await asyncio.gather(*(open_session(browser, url, i, load_times, errors) for i in range(sessions)))
            t0 = time.monotonic()
            deadline = t0 + seconds
            await asyncio.gather(*(interact(page, i, deadline, times, errors) for i, (_, page) in enumerate(opened)))
            wall = time.monotonic() - t0
            rss_end = rss_mib(server.pid)
            for ctx, _ in opened:
                await ctx.close()
    times.sort()
    pct = lambda q: round(1000 * times[min(len(times) - 1, int(q * len(times)))], 1) if times else None  # noqa: E731
    load_times.sort()
    return {"sessions": sessions, "seconds": seconds, "wall_s": round(wall, 1),
            "page_open_p50_s": round(statistics.median(load_times), 1) if load_times else None,
            "page_open_max_s": round(load_times[-1], 1) if load_times else None,
            "interactions": len(times),
            "errors": len(errors), "error_samples": errors[:5], "p50_ms": pct(0.5), "p95_ms": pct(0.95),
            "max_ms": round(1000 * times[-1], 1) if times else None,
            "rss_start_mib": round(rss_start, 1), "rss_end_mib": round(rss_end, 1),
            "rss_growth_pct": round(100 * (rss_end - rss_start) / rss_start, 1),
            "what": "answer time = input submitted -> new translation shown in that browser (server + render), "
                    "all sessions' Chromium sharing the machine with the server"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    report = asyncio.run(run(args.sessions, args.seconds))
    print(json.dumps(report, indent=None if args.json else 1, ensure_ascii=False))
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
