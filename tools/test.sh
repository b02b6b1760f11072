#!/usr/bin/env bash
# The README's test command: set up (idempotent, see tools/install.sh), then run the unit tests and the tiny
# end-to-end pipeline run (tests/test_run_pipeline.py drives run.sh on a tiny egs/mini).
#   bash tools/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/install.sh
. ./path.sh
python -m pytest -q --durations=15 tests/ "$@"
