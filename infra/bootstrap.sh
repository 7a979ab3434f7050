#!/usr/bin/env bash
# The README's two commands. Creates ./.venv on first use (or when pyproject.toml changed), then:
#   bash infra/bootstrap.sh demo [args]   -> the main job: the whole loop on the embedded stack
#   bash infra/bootstrap.sh test [args]   -> the test suite (pytest args pass through)
#   bash infra/bootstrap.sh run  CMD...   -> any command inside the environment (e.g. run modelbus up)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${MODELBUS_VENV:-.venv}"
PY="$(command -v python3.11 || command -v python3)"

if [ ! -x "$VENV/bin/modelbus" ] || [ pyproject.toml -nt "$VENV/.installed" ]; then
  echo "bootstrap: creating $VENV with $($PY --version) (first run takes a few minutes)" >&2
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch first and pinned: an unpinned resolve would pull several GB of CUDA wheels.
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  "$VENV/bin/python" -m pip install -q -e ".[test]"
  touch "$VENV/.installed"
fi

cmd="${1:-}"; shift || true
case "$cmd" in
  demo) exec "$VENV/bin/modelbus" demo "$@" ;;
  test)
    # The dashboard's browser tests render it in headless Chromium (Debian's package, about a minute to
    # install once); without root or apt they are skipped with the reason, never failed.
    if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "bootstrap: installing chromium for the dashboard browser tests" >&2
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
          chromium fonts-liberation; } >/dev/null 2>&1 \
        || echo "bootstrap: could not install chromium; the dashboard browser tests will be skipped" >&2
    fi
    exec "$VENV/bin/python" -m pytest "$@" ;;
  run)  export PATH="$PWD/$VENV/bin:$PATH"; exec "$@" ;;
  *) echo "usage: bash infra/bootstrap.sh {demo|test|run CMD...}" >&2; exit 2 ;;
esac
