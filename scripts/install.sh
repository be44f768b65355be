#!/usr/bin/env bash
# Install untwine and everything it needs into ./.venv, from nothing.
#   bash scripts/install.sh          the library and the `untwine` command
#   bash scripts/install.sh --test   also the test tools, and Debian's chromium + chromedriver for the browser test
# torch is installed first, pinned (torch==2.13.0): on the developers' CPU machines pip takes the CPU wheel
# that lies on disk; elsewhere the same pin takes PyPI's build (CUDA on a GPU machine). See DEVELOPERS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
if [ "${1:-}" = "--test" ]; then
  extras="[test]"
  if ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
      echo "== installing chromium and chromium-driver (Debian) for the report's browser test"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
      echo "!! chromium/chromedriver missing and cannot apt-get them: the browser test will be skipped"
    fi
  fi
fi
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".${extras}"
echo "== untwine installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
