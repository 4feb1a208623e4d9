"""Helpers for AppTest-based page tests."""
import json

from streamlit.testing.v1 import AppTest

from conftest import ROOT

APP = str(ROOT / "app.py")


def open_page(page: str, query: dict | None = None, timeout: int = 90) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=timeout)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.switch_page(page)
    at.run()
    return at


def elements(node, kind: str) -> list:
    out = []
    for child in getattr(node, "children", {}).values():
        if getattr(child, "type", None) == kind:
            out.append(child)
        out += elements(child, kind)
    return out


def plotly_figures(at: AppTest) -> list[dict]:
    return [json.loads(e.proto.spec) for e in elements(at.main, "plotly_chart")]


def messages(at: AppTest) -> str:
    return " | ".join([e.value for e in at.error] + [w.value for w in at.warning] + [i.value for i in at.info])
