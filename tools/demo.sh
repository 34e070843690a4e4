#!/usr/bin/env bash
# Set up the environment (first run only), generate the embedded synthetic benchmark,
# pretrain the tiny CLIP if not cached, and run zero-shot, linear probe, CoOp and LMPT on it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
exec .venv/bin/python tools/demo.py "$@"
