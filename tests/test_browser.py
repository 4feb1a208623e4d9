"""A real browser against `streamlit run app.py`: Debian's Chromium driven by Playwright,
both started by tools.serve (the same start-up as the benchmark and the load test).

Screenshots go to screenshots/ (git-ignored) for a person to look at."""
import os

import pytest

from app_support.constants import PAGES
from tools.serve import chromium, chromium_path, streamlit_server

from conftest import ROOT

SHOTS = ROOT / "screenshots"

if chromium_path() is None:
    if os.environ.get("ATTENTION_LAB_SKIP_BROWSER") == "1":
        pytest.skip("no chromium and ATTENTION_LAB_SKIP_BROWSER=1", allow_module_level=True)
    raise RuntimeError("Debian's chromium is needed for the browser test: apt-get install chromium "
                       "(scripts/test.sh does this), or set ATTENTION_LAB_SKIP_BROWSER=1")


@pytest.fixture(scope="module")
def server():
    with streamlit_server(capture_output=True) as s:
        yield s.url


@pytest.fixture(scope="module")
def browser():
    SHOTS.mkdir(exist_ok=True)
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def page(browser):
    pg = browser.new_page(viewport={"width": 1400, "height": 2200})
    yield pg
    pg.close()


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
    assert "tab=Step" in pg.url                     # the open tab lives in the URL too
    pg.locator(".updatemenu-button").first.click()  # ▶ play
    pg.get_by_text("step 3/").first.wait_for(timeout=30_000)
    pg.screenshot(path=str(SHOTS / "translate-steps.png"))
    assert_no_exception(pg, "translate steps")

    for p in PAGES[1:] + PAGES[:1]:
        pg.get_by_role("link", name=p.title).first.click()
        wait_idle(pg, timeout=120_000)
        pg.wait_for_timeout(1500)
        assert_no_exception(pg, p.title)
        pg.screenshot(path=str(SHOTS / f"page-{p.url_path or 'home'}.png"))


# Each group of the step figure's parts, as boxes in the page; none may overlap another group.
_STEP_PARTS = """root => {
  const boxes = sel => [...root.querySelectorAll(sel)].map(e => e.getBoundingClientRect())
    .filter(b => b.width > 0 && b.height > 0).map(b => [b.left, b.top, b.right, b.bottom]);
  const whole = root.getBoundingClientRect();
  return {figure: [[whole.left, whole.top, whole.right, whole.bottom]], title: boxes('.g-gtitle text'), subplot_titles: boxes('.annotation-text'),
          plots: boxes('.nsewdrag'), ticks: boxes('.xtick text, .x2tick text, .ytick text'),
          axis_titles: boxes('.g-xtitle text, .g-x2title text, .g-ytitle text'),
          buttons: boxes('.updatemenu-button'), slider: boxes('.slider-group'), toolbar: boxes('.modebar')};
}"""
_APART = [("toolbar", "title"), ("toolbar", "ticks"), ("toolbar", "subplot_titles"), ("toolbar", "plots"),
          ("title", "subplot_titles"), ("title", "plots"), ("title", "ticks"),
          ("buttons", "plots"), ("buttons", "ticks"), ("buttons", "axis_titles"), ("buttons", "slider"),
          ("slider", "plots"), ("slider", "ticks"), ("slider", "axis_titles"), ("subplot_titles", "plots")]


def _overlaps(a, b) -> bool:
    return a[0] < b[2] - 1 and b[0] < a[2] - 1 and a[1] < b[3] - 1 and b[1] < a[3] - 1


@pytest.mark.parametrize("projector", [False, True], ids=["normal", "projector"])
def test_step_view_title_and_controls_do_not_overlap_the_chart(server, browser, projector):
    """At 1440 px wide, in normal and projector fonts: the step view's title, play/pause
    buttons and slider stay clear of the plots, the tick labels and the axis titles."""
    pg = browser.new_page(viewport={"width": 1440, "height": 1800})
    try:
        pg.goto(f"{server}/translate?text=Ein+Mann+f%C3%A4hrt+mit+dem+Fahrrad+die+Stra%C3%9Fe+entlang.",
                wait_until="domcontentloaded")
        pg.get_by_text("Attention: where the decoder looked").first.wait_for(timeout=120_000)
        if projector:
            pg.get_by_text("Projector mode (large fonts)").click()
            wait_idle(pg)
        pg.get_by_role("tab", name="Step by step").click()
        pg.get_by_text("step 1/").first.wait_for(timeout=30_000)
        pg.wait_for_timeout(800)
        figure = pg.locator(".js-plotly-plot:has(.updatemenu-button)").first
        figure.scroll_into_view_if_needed()
        name = "projector" if projector else "normal"
        pg.screenshot(path=str(SHOTS / f"steps-1440-{name}.png"))
        figure.screenshot(path=str(SHOTS / f"steps-1440-{name}-figure.png"))
        parts = figure.evaluate(_STEP_PARTS)
        assert all(parts[k] for k in ("title", "plots", "buttons", "slider", "ticks", "toolbar")), parts
        (_, top, _, bottom), = parts["figure"]
        outside = [k for k in ("title", "buttons", "slider", "ticks", "axis_titles")
                   for b in parts[k] if b[1] < top - 1 or b[3] > bottom + 1]
        assert not outside, outside                                   # nothing cut off at the top or bottom
        clashes = [(a, b) for a, b in _APART for x in parts[a] for y in parts[b] if _overlaps(x, y)]
        assert not clashes, sorted(set(clashes))
        assert_no_exception(pg, f"translate steps ({name})")
    finally:
        pg.close()


def test_exposure_replay_charts_keep_their_plot_height(server, browser):
    # Streamlit's default sizing fitted this layered chart (rotated labels, a legend under it)
    # into its element and squeezed the plot to a flat line; with autosize "pad" the plot keeps
    # its 300 px and the element grows around it.
    pg = browser.new_page(viewport={"width": 1440, "height": 2200})
    try:
        pg.goto(f"{server}/teacher_forcing?replay=translate&sent=3", wait_until="domcontentloaded")
        wait_idle(pg, timeout=180_000)
        pg.get_by_role("tab", name="Exposure-bias replay").click()
        wait_idle(pg, timeout=180_000)
        pg.get_by_text("p(gold | gold prefix)").first.wait_for(timeout=120_000)
        # the caption comes before the two models' replays: wait for both charts (a busy
        # machine takes seconds per replay), then for their layout to settle
        pg.wait_for_function("() => document.querySelectorAll(\"[data-testid='stVegaLiteChart']\").length >= 2",
                             timeout=120_000)
        pg.wait_for_timeout(1500)
        charts = pg.locator("[data-testid='stVegaLiteChart']")
        heights = [b["height"] for b in (charts.nth(i).bounding_box() for i in range(charts.count()))
                   if b and b["width"] > 0]
        assert len(heights) >= 2, heights                          # both models' charts are drawn
        assert all(h >= 420 for h in heights), heights             # 300 px of plot plus title, axes, legend
        assert_no_exception(pg, "teacher forcing replay")
    finally:
        pg.close()


def test_compare_heatmap_titles_and_labels_clear_the_toolbar(server, browser):
    """The Compare page draws one heatmap per model in columns as narrow as Plotly's toolbar
    (at 1000 px, with the sidebar open, a column is as wide as the toolbar itself): its title
    and source tokens start below the toolbar."""
    width = 1000
    pg = browser.new_page(viewport={"width": width, "height": 2400})
    try:
        pg.goto(f"{server}/compare?task=translate&text=Ein+Mann+f%C3%A4hrt+mit+dem+Fahrrad.",
                wait_until="domcontentloaded")
        figures = pg.locator(".js-plotly-plot")
        figures.nth(1).wait_for(timeout=180_000)
        wait_idle(pg, timeout=180_000)
        pg.wait_for_timeout(1000)
        drawn = [parts for parts in (figures.nth(i).evaluate(_STEP_PARTS) for i in range(figures.count()))
                 if parts["plots"]]                                  # (an empty placeholder is no figure)
        assert len(drawn) >= 2
        for i, parts in enumerate(drawn):
            assert parts["toolbar"] and parts["title"] and parts["ticks"], parts
            clashes = [(a, b) for a, b in _APART if a == "toolbar" for x in parts[a] for y in parts[b]
                       if _overlaps(x, y)]
            assert not clashes, (i, sorted(set(clashes)))
        assert_no_exception(pg, f"compare ({width} px)")
    finally:
        pg.close()
