"""One engine, clearly layered: the engine (seq2seq) imports neither Streamlit nor Playwright;
views share constants through app_support.constants and never import from each other; all
charts are built in seq2seq.figures; the page list exists once."""
import ast
import pkgutil
import subprocess
import sys

import seq2seq
from app_support.constants import PAGES

from conftest import ROOT

APP_SUPPORT = ROOT / "app_support"
# the modules every view may import from; any other app_support module is a view (or a view's helper)
SHARED = {"common", "constants", "cards", "navigation"}


def _engine_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(seq2seq.__path__, "seq2seq."))


def test_importing_the_whole_engine_loads_neither_streamlit_nor_playwright():
    modules = _engine_modules()
    assert {"seq2seq.bench", "seq2seq.train", "seq2seq.lab", "seq2seq.exposure", "seq2seq.figures"} <= set(modules)
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}:\n"
            "    importlib.import_module(m)\n"
            "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = set(__import__("json").loads(proc.stdout.strip().splitlines()[-1]))
    assert "seq2seq" in loaded
    for outside in ("streamlit", "playwright", "app_support", "tools"):
        assert outside not in loaded, f"importing the engine loaded {outside}"


def _sibling_imports(path) -> set[str]:
    """app_support modules that `path` imports (relative or absolute)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                out.add(node.module.split(".")[0])
            elif node.level == 0 and (node.module or "").startswith("app_support."):
                out.add(node.module.split(".")[1])
    return out


# the Translate/Reverse view's tabs live in their own modules; only that view imports them
VIEW_TABS = {"inspector": {"step_view", "training_view"}}


def test_views_import_shared_modules_only_never_another_view():
    for path in sorted(APP_SUPPORT.glob("*.py")):
        if path.stem in SHARED or path.stem == "__init__":
            continue
        others = _sibling_imports(path) - SHARED - VIEW_TABS.get(path.stem, set())
        assert not others, f"{path.name} imports from other views: {sorted(others)}"
    # the shared modules themselves depend on nothing view-specific
    for name in SHARED:
        assert _sibling_imports(APP_SUPPORT / f"{name}.py") <= SHARED, name


def test_charts_are_built_in_seq2seq_figures_only():
    for path in sorted(APP_SUPPORT.glob("*.py")) + sorted((ROOT / "pages").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in ("altair", "plotly"), f"{path.name} builds charts itself ({name})"


def test_the_app_never_changes_the_process_thread_count():
    for path in sorted(APP_SUPPORT.glob("*.py")) + [ROOT / "seq2seq" / "lab.py"]:
        calls = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)
                 and getattr(n.func, "attr", getattr(n.func, "id", None)) == "set_num_threads"]
        assert not calls, f"{path.name} calls set_num_threads (it changes later threads' default too)"


def test_one_page_list_matching_the_page_files_with_material_icons():
    assert [p.path for p in PAGES].count("pages/home.py") == 1 and PAGES[0].path == "pages/home.py"
    assert sorted(p.path for p in PAGES) == sorted(f"pages/{f.name}" for f in (ROOT / "pages").glob("*.py"))
    assert len({p.title for p in PAGES}) == len(PAGES)
    assert all(p.icon.startswith(":material/") and p.icon.endswith(":") for p in PAGES)
    assert all(p.summary for p in PAGES[1:])                 # the Home page says what each page shows
