#!/usr/bin/env bash
# Every figure of the models table in one run: torch version, device, linear-probe quality on
# Jurkat (morphology, embedding, both; all labels and 10 per class), the fine-tuned classifier
# and morphology + fine-tuned embedding (fine-tuned per fold), pretraining and embedding
# throughput, and a 100,000-cell demo's pretrain, embed, fine-tune after a batch (5,000 labels)
# and re-score-all times. Under 5 minutes on one H200; --tiny runs the same path on a CPU with
# a tiny network in about a minute (tests/unit/models/test_gpu_check.py).
#
# Usage: benchmarks/gpu_check.sh [--tiny] [--nondeterministic] [--old-lr] [--device auto|cpu|cuda]
#                                [--data JURKAT_DIR] [--work DIR] [--cells N]
# JURKAT_DIR (or $PHENOSCOUT_JURKAT): the jurkat_cellcycle_ifc folder (crops + labels.csv);
# default ../shared/data/jurkat_cellcycle_ifc next to the repository.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-}"
if [[ -z "$py" ]]; then
    if [[ -x "$here/.venv/bin/python" ]]; then py="$here/.venv/bin/python"; else py=python3; fi
fi
data="${PHENOSCOUT_JURKAT:-$here/../shared/data/jurkat_cellcycle_ifc}"
work="" ; cells=100000 ; extra=() ; tiny=0 ; device=auto
while [[ $# -gt 0 ]]; do
    case "$1" in
        --tiny) tiny=1; extra+=(--tiny); shift ;;
        --nondeterministic) extra+=(--nondeterministic); shift ;;
        --old-lr) extra+=(--old-lr); shift ;;
        --device) device="$2"; shift 2 ;;
        --data) data="$2"; shift 2 ;;
        --work) work="$2"; shift 2 ;;
        --cells) cells="$2"; shift 2 ;;
        *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [[ ! -f "$data/labels.csv" ]]; then
    echo "gpu_check.sh: $data has no labels.csv; give the Jurkat folder with --data" >&2
    exit 2
fi
work="${work:-$(mktemp -d /tmp/gpu_check.XXXXXX)}"
mkdir -p "$work"
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
cores="$(nproc)"
if [[ $tiny == 1 ]]; then cells=1000; jobs=1; threads=1; else jobs=$((cores > 2 ? cores - 2 : 1)); threads=4; fi
start=$(date +%s)
# the demo is built in the background (CPU processes) while the Jurkat part runs on the device
rm -rf "$work/demo"
"$py" "$here/benchmarks/bench_models.py" --prepare-demo "$work/demo" --cells "$cells" \
    --jobs "$jobs" > "$work/demo.log" 2>&1 &
demo_pid=$!
trap 'kill $demo_pid 2>/dev/null || true' EXIT
"$py" "$here/benchmarks/bench_models.py" --check --device "$device" --data "$data" \
    --work "$work" --demo "$work/demo" --jobs "$jobs" --threads "$threads" "${extra[@]}" \
    || { echo "--- demo log"; cat "$work/demo.log"; exit 1; }
echo "total $(( $(date +%s) - start )) s"
