#!/usr/bin/env bash
# Reproduce the built-in default model and every figure of MODEL_CARD.md, on a CPU (2 cores here).
#
#   scripts/default_model.sh            # everything: corpus, tokenizer, sweep, optimisers, ablation,
#                                       # the 70-minute run, the bf16 export, evals, benchmarks (~2.5 h)
#   scripts/default_model.sh evals      # only the evaluations and benchmarks of the shipped model
#
# The stages are scripts/cpu_model.sh's (each resumable). The ablation pair is the two 4-minute AdamW
# runs of `cpu_model.sh optim`: runs/optim-adamw (causal masking) and runs/l2r-adamw (left to right).
# Outputs: corpus/, runs/isoflop, runs/optim-*, runs/l2r-adamw, runs/cpu-2h, runs/eval/*,
# infill/default_model/ (the shipped copy, bf16).
set -euo pipefail
cd "$(dirname "$0")/.."
INFILL=.venv/bin/infill
PY=.venv/bin/python

if [ "${1:-all}" = all ]; then
    scripts/cpu_model.sh corpus
    scripts/cpu_model.sh sweep
    scripts/cpu_model.sh optim
    scripts/cpu_model.sh train --time-budget 70m --set optimizer=muon --quiet
    cp runs/cpu-2h/loss.png docs/default_model/loss.png
    $INFILL train plot runs/l2r-adamw --out docs/default_model/loss-l2r.png
    $INFILL export --checkpoint infill/default_model --dtype bfloat16 --model runs/cpu-2h/model
fi

M=infill/default_model
A=runs/l2r-adamw/model
C=runs/optim-adamw/model
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
$INFILL eval humaneval-infilling --split single-line --model $C --out $E/single-line-causal --quiet --workers 1
$INFILL eval middle-bpb --split single-line --model $C --out $E/middle-bpb-causal --quiet
$INFILL eval perplexity --data corpus --limit 40 --model $C --out $E/bpb-causal --quiet
$INFILL eval types --data corpus --model $M --out $E/types --quiet
$INFILL eval names --data corpus --model $M --out $E/names --quiet
# the rest of a line as an editor asks, on the held-out package (detect-secrets), beside the copy baseline
$INFILL eval rest-of-line --model $M --out $E/rest-of-line --quiet
$INFILL eval rest-of-line --model $M -n 400 --out $E/rest-of-line-400 --quiet
) &
wait
# the floor: an empty line in every single-line hole
$PY -c "import json; from infill.benchmarks import load_humaneval_infilling as tasks
for t in tasks('single-line'): print(json.dumps({'task_id': t['task_id'], 'completion': '\\n'}))" > $E/noop-single-line.jsonl
$INFILL eval score --samples $E/noop-single-line.jsonl --out $E/noop-single-line --quiet
$INFILL eval report $E/single-line $E/multi-line $E/single-line-l2r $E/noop-single-line $E/middle-bpb $E/middle-bpb-l2r $E/bpb \
    $E/bpb-l2r $E/types $E/names $E/rest-of-line $E/rest-of-line-400 --out $E/report
cp $E/report/report.md $E/report/report.png docs/default_model/
unset OMP_NUM_THREADS
$PY bench/lsp_latency.py --json --lines 10 --model $M
$PY bench/decode.py --json --model $M
