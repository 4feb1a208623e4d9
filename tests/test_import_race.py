"""Concurrent first page loads on a fresh server: a session that draws a chart while another
is still importing pandas must wait for it (app_support.navigation.import_chart_dependencies),
not see a half-imported module. Run in a fresh interpreter, pandas' import slowed down."""
import subprocess
import sys

from conftest import ROOT

SCRIPT = r'''
import importlib.util, sys, threading, time

spec = importlib.util.find_spec("pandas")
real_exec = spec.loader.exec_module

class SlowPandasFinder:
    """pandas' import sits in sys.modules, half done, for 2 s before its code runs."""
    def find_spec(self, name, path=None, target=None):
        if name != "pandas":
            return None
        def exec_module(module):
            time.sleep(2.0)
            real_exec(module)
        spec.loader.exec_module = exec_module
        return spec

import plotly.graph_objects as go            # loaded at server start, before any session, as in the app
from app_support.navigation import import_chart_dependencies
sys.meta_path.insert(0, SlowPandasFinder())
importer = threading.Thread(target=lambda: __import__("pandas"))
importer.start()
time.sleep(0.5)                              # pandas is now half imported by the other session
assert "pandas" in sys.modules and not hasattr(sys.modules["pandas"], "Series")
if sys.argv[1] == "guarded":
    import_chart_dependencies()
try:
    go.Figure(go.Heatmap(z=[[0]]))
    print("drawn")
except AttributeError as e:
    print("failed:", e)
importer.join()
'''


def run(mode: str) -> str:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_chart_waits_for_a_pandas_import_under_way():
    assert run("guarded") == "drawn"
    # without the wait, the race is real (the test would not catch a removed guard otherwise)
    assert run("unguarded").startswith("failed: partially initialized module 'pandas'")
