#!/usr/bin/env bash
# Issue 12: does any decoding setting put the bidirectional beam above the L2R beam? The three title
# models of RUN (default runs/seq2seq-en, from `kexue seq2seq train`) decoded on the first 500 *valid*
# pairs (the test split stays for the committed figures) under both scorings (Su's k² pairs, the
# paper's half beam) and length penalty 0 (Su's) or 1; one results file per setting in
# benchmarks/results/seq2seq_valid/<scoring>-lp<penalty>.json, each figure with its command.
#   bash benchmarks/seq2seq_valid_sweep.sh [RUN]      # 1 to 2 minutes per setting at 1 thread (2.0M-parameter models)
set -euo pipefail
cd "$(dirname "$0")/.."
KEXUE=${KEXUE:-.venv/bin/kexue}
RUN=${1:-runs/seq2seq-en}
OUT=benchmarks/results/seq2seq_valid
mkdir -p "$OUT"
for scoring in su half; do
  for lp in 0 1; do
    rm -f "$OUT/$scoring-lp$lp.json"  # a fresh file: these figures belong to this RUN only
    "$KEXUE" seq2seq eval --run "$RUN" --split valid --beam 4 --scoring "$scoring" --length_penalty "$lp" \
      --max_pairs 500 --latency_pairs 32 --examples 0 --threads 1 --results "$OUT/$scoring-lp$lp.json"
  done
done
