#!/usr/bin/env bash
# Install what the tests need into .venv/ and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -r requirements-dev.txt
if ! command -v chromium >/dev/null 2>&1; then
  # the real-browser test drives Debian's chromium (never a downloaded browser)
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || echo "note: could not install chromium"
  fi
fi
set +e
# one worker per core (at most 4), each taking whole modules, the slowest first (tests/conftest.py)
workers=$(nproc 2>/dev/null || echo 2)
[ "$workers" -gt 4 ] && workers=4
.venv/bin/python -m pytest -q -p no:cacheprovider -n "$workers" --dist loadfile --no-loadscope-reorder tests "$@"
rc=$?
[ "$rc" -eq 5 ] && { echo "no tests ran"; exit 1; }
exit "$rc"
