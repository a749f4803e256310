#!/usr/bin/env bash
# Mutation testing (mutmut) of statistics, ranking metrics, parsers, the loss mask and collation, splits and
# leakage checks, and resume. One command from a clean clone; slow (not part of CI): hours on 2 cores for all groups.
#   bash scripts/mutation.sh                 # every group (scripts/mutation.py --list shows them)
#   bash scripts/mutation.sh splits stats    # some groups
#   bash scripts/mutation.sh --report-only   # summarize the last runs again
# Results: a Markdown table on stdout and in build/mutation/summary.md; surviving mutants' diffs in
# build/mutation/survivors.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -d .venv ] || python3 -m venv .venv
  . .venv/bin/activate
fi
if ! python -c "import mutmut, hypothesis, vlmtune" 2>/dev/null; then
  bash scripts/setup.sh test,mutation
fi
exec python scripts/mutation.py "$@"
