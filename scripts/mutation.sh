#!/usr/bin/env bash
# Mutation testing of the sans-IO core (src/ftplb/proto and src/ftplb/balancing)
# against the unit tests, scored per package and per module.
#
# Usage: scripts/mutation.sh [--max-children N] [MODULE]
#   MODULE limits the run to one package or module, in any of these spellings:
#   proto, balancing.stick, proto/replies.py, src/ftplb/proto/replies.py.
#   --max-children bounds the parallel test processes (default 2).
#
# Every run starts from a fresh mutants/ directory, so that no result of an
# older source or test tree is counted. Timeouts count as killed. Exits 1 when
# a package scores below 95% once the mutants listed (with a reason) in
# tests/unit/equivalent_mutants.txt are left out.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

THRESHOLD=95
MAX_CHILDREN=2
FILTER=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --max-children) MAX_CHILDREN="$2"; shift 2 ;;
        --max-children=*) MAX_CHILDREN="${1#*=}"; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        -*) echo "[mutation] unknown option $1" >&2; exit 2 ;;
        *) [[ -z "$FILTER" ]] || { echo "[mutation] one MODULE at most" >&2; exit 2; }
           FILTER="$1"; shift ;;
    esac
done
if ! [[ "$MAX_CHILDREN" =~ ^[1-9][0-9]*$ ]]; then
    echo "[mutation] --max-children needs a positive number" >&2
    exit 2
fi

if [[ -z "$FILTER" ]]; then
    MODULES=(proto balancing)
else
    module="${FILTER#src/}"
    module="${module#ftplb/}"
    module="${module#ftplb.}"
    module="${module%.py}"
    module="${module%/}"
    module="${module//\//.}"
    if ! [[ "$module" =~ ^(proto|balancing)(\.[a-z_]+)?$ ]]; then
        echo "[mutation] $FILTER is not a module of proto or balancing" >&2
        exit 2
    fi
    if [[ ! -e "src/ftplb/${module//.//}.py" && ! -d "src/ftplb/${module//.//}" ]]; then
        echo "[mutation] no such module: src/ftplb/${module//.//}.py" >&2
        exit 2
    fi
    MODULES=("$module")
fi
# mutmut names a mutant <module>.<function>__mutmut_<n>: one glob per module.
GLOBS=()
PREFIXES=()
for module in "${MODULES[@]}"; do
    GLOBS+=("ftplb.${module}.*")
    PREFIXES+=("ftplb.${module}.")
done

if ! .venv/bin/python -c 'import mutmut, pytest, hypothesis' 2>/dev/null; then
    scripts/setup.sh test
fi

rm -rf mutants
started=$SECONDS
echo "[mutation] mutmut run --max-children ${MAX_CHILDREN} ${GLOBS[*]} (log: mutants/mutmut-run.log)"
mkdir -p mutants
status=0
.venv/bin/mutmut run --max-children "$MAX_CHILDREN" "${GLOBS[@]}" >mutants/mutmut-run.log.tmp 2>&1 \
    || status=$?
# The spinner writes carriage returns; keep the log readable.
tr '\r' '\n' <mutants/mutmut-run.log.tmp | grep -v '^\s*$' >mutants/mutmut-run.log || true
rm -f mutants/mutmut-run.log.tmp
if [[ $status -ne 0 ]]; then
    tail -n 40 mutants/mutmut-run.log
    echo "[mutation] mutmut failed (exit $status)" >&2
    exit "$status"
fi
echo "[mutation] mutmut took $((SECONDS - started)) s"
exec .venv/bin/python scripts/mutation_score.py "$THRESHOLD" "${PREFIXES[@]}"
