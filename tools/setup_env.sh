#!/usr/bin/env bash
# Create .venv (if needed) and install the project's requirements into it.
# Idempotent: re-running after a change of requirements*.txt (or of this script) installs the difference.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# a .venv whose creation failed half-way (no ensurepip, say) has a python but no pip: made again
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  rm -rf .venv
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.lmpt-requirements.sha256
# the requirements and this script (which pins torch): a change of either installs again
want=$(cat requirements.txt requirements-dev.txt tools/setup_env.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # torch first, pinned to the release this project is tested with (a torch>=2.1 range works too)
  .venv/bin/python -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
  echo "$want" > "$stamp"
fi
