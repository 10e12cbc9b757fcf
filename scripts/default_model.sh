#!/usr/bin/env bash
# Reproduce the built-in default model and every figure of MODEL_CARD.md, on a CPU (2 cores here).
#
#   scripts/default_model.sh            # everything: corpus, tokenizer, both trainings, evals, benchmarks
#   scripts/default_model.sh evals      # only the evaluations and benchmarks of the shipped model
#
# The two trainings (the model and its left-to-right ablation, same recipe and budget) run side by
# side with one thread each, which is faster on this machine than one after the other with two.
# Outputs: corpus/, runs/small, runs/l2r, runs/eval/*, infill/default_model/ (the shipped copy, bf16).
set -euo pipefail
cd "$(dirname "$0")/.."
INFILL=.venv/bin/infill
PY=.venv/bin/python
L2R=(--set objective.causal_rate=0 --set objective.spm_rate=0 --set objective.psm_rate=0 --set objective.l2r_rate=1)

if [ "${1:-all}" = all ]; then
    $INFILL data build --site-packages --workers 2 --out corpus
    $INFILL data tokenizer --data corpus --vocab-size 16384 --out corpus
    OMP_NUM_THREADS=1 $INFILL train --recipe cpu-small --data corpus --out runs/small --quiet &
    OMP_NUM_THREADS=1 $INFILL train --recipe cpu-small --data corpus --out runs/l2r --quiet "${L2R[@]}" &
    wait
    $INFILL train plot runs/small --out docs/default_model/loss.png
    $INFILL train plot runs/l2r --out docs/default_model/loss-l2r.png
    $INFILL export --checkpoint infill/default_model --dtype bfloat16 --model runs/small/model
    $INFILL export --checkpoint runs/l2r/l2r-ablation --dtype bfloat16 --model runs/l2r/model
fi

M=infill/default_model
A=runs/l2r/l2r-ablation
E=runs/eval
export OMP_NUM_THREADS=1
# One core: HumanEval-infilling multi-line, the first 500 of 5,815 tasks (greedy; 128 tokens at most:
# the longest canonical middle of these 500 is 114 tokens).
$INFILL eval humaneval-infilling --split multi-line --limit 500 --max-tokens 128 --model $M \
    --out $E/multi-line --quiet --workers 1 &
# The other: single-line, all 1,033 tasks; the ablation (the left-to-right model sees the prefix only);
# then held-out Python (the corpus's validation split, never trained on): bits per byte, types, names.
(
$INFILL eval humaneval-infilling --split single-line --model $M --out $E/single-line --quiet --workers 1
$INFILL eval humaneval-infilling --split single-line --format l2r --model $A --out $E/single-line-l2r --quiet --workers 1
$INFILL eval middle-bpb --split single-line --model $M --out $E/middle-bpb --quiet
$INFILL eval middle-bpb --split single-line --format l2r --model $A --out $E/middle-bpb-l2r --quiet
$INFILL eval perplexity --data corpus --limit 40 --model $M --out $E/bpb --quiet
$INFILL eval perplexity --data corpus --limit 40 --model $A --out $E/bpb-l2r --quiet
$INFILL eval types --data corpus --model $M --out $E/types --quiet
$INFILL eval names --data corpus --model $M --out $E/names --quiet
# the rest of a line as an editor asks, on the held-out package (detect-secrets), beside the copy baseline
$INFILL eval rest-of-line --model $M --out $E/rest-of-line --quiet
) &
wait
# the floor: an empty line in every single-line hole
$PY -c "import json; from infill.benchmarks import load_humaneval_infilling as tasks
for t in tasks('single-line'): print(json.dumps({'task_id': t['task_id'], 'completion': '\\n'}))" > $E/noop-single-line.jsonl
$INFILL eval score --samples $E/noop-single-line.jsonl --out $E/noop-single-line --quiet
$INFILL eval report $E/single-line $E/multi-line $E/single-line-l2r $E/noop-single-line $E/middle-bpb $E/middle-bpb-l2r $E/bpb \
    $E/bpb-l2r $E/types $E/names $E/rest-of-line --out $E/report
cp $E/report/report.md $E/report/report.png docs/default_model/
unset OMP_NUM_THREADS
$PY bench/lsp_latency.py --json --lines 10 --model $M
$PY bench/decode.py --json --model $M
