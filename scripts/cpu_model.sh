#!/usr/bin/env bash
# The compute-optimal CPU model (issue 18), one stage per command, each resumable (docs/train.md):
#
#   scripts/cpu_model.sh corpus   # corpus/ from the installed packages (if missing) + a 4,096-token tokenizer
#   scripts/cpu_model.sh sweep    # IsoFLOP sweep: 3 sizes x 2 budgets (~20 min) -> docs/images/isoflop.png
#   scripts/cpu_model.sh optim    # AdamW against Muon, then the left-to-right ablation: 4 min of wall time each
#   scripts/cpu_model.sh train [ARG...]  # the main run (recipe cpu-2h, 2 h unless ARGs say otherwise, e.g.
#                                        # --time-budget 85m --set optimizer=muon) -> runs/cpu-2h/model
#   scripts/cpu_model.sh eval [MODEL]  # the ship test: the shipped model against MODEL (default
#                                      # runs/cpu-2h/model; also a model gpu_oneshot.sh returned) -> runs/eval-ship
#
# Every training uses both cores (one run at a time). Interrupted? Run the same command again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
TOK=corpus/tok4096
SET_TOK=(--set "tokenizer=$TOK/tokenizer.json")
final_eval() {  # the last evaluation of a run: validation loss and bits per byte
    "$PY" -c "import sys, json; from train.logs import read_log; e = read_log(sys.argv[1])['eval'][-1]; \
print(sys.argv[1], json.dumps({k: e[k] for k in ('step', 'val_loss', 'bpb') if k in e}))" "$1"
}
case "${1:-}" in
    corpus)
        [ -f corpus/report.json ] || "$PY" -m infill.cli data build --site-packages --executor local --workers 2 --out corpus
        [ -f $TOK/tokenizer.json ] || "$PY" -m infill.cli data tokenizer --data corpus --vocab-size 4096 --out $TOK
        ;;
    sweep)
        # batch 8,192 and 10 warm-up steps so that the smallest run still takes ~60 optimizer steps
        "$PY" -m train.isoflop --recipe cpu-2h --data corpus "${SET_TOK[@]}" --budgets 1e13,3e13 \
            --set batch_tokens=8192 --set warmup_steps=10 --shapes 128x2,192x3,256x4 --out runs/isoflop --quiet
        cp runs/isoflop/isoflop.png docs/images/isoflop.png
        ;;
    optim)
        for opt in adamw muon; do
            "$PY" -m infill.cli train --recipe cpu-2h --data corpus "${SET_TOK[@]}" --time-budget 4m --quiet \
                --set optimizer=$opt --set eval_every=100000 --out runs/optim-$opt --resume
            final_eval runs/optim-$opt
        done
        # the ablation at the same 4 minutes: left-to-right only, against runs/optim-adamw
        "$PY" -m infill.cli train --recipe cpu-2h --data corpus "${SET_TOK[@]}" --time-budget 4m --quiet \
            --set optimizer=adamw --set eval_every=100000 --set objective.causal_rate=0 --set objective.spm_rate=0 \
            --set objective.psm_rate=0 --set objective.l2r_rate=1 --out runs/l2r-adamw --resume
        final_eval runs/l2r-adamw
        ;;
    train)
        "$PY" -m infill.cli train --recipe cpu-2h --data corpus "${SET_TOK[@]}" --out runs/cpu-2h --resume "${@:2}"
        "$PY" -m infill.cli train plot runs/cpu-2h --out runs/cpu-2h/loss.png
        final_eval runs/cpu-2h
        ;;
    eval)  # issue 18's three ship criteria, both models on the same data and items (docs/eval.md)
        for run in "shipped:infill/default_model" "candidate:${2:-runs/cpu-2h/model}"; do
            model=${run#*:} out=runs/eval-ship/${run%%:*}
            "$PY" -m infill.cli eval perplexity --data corpus --limit 40 --model "$model" --out "$out/bpb" --quiet
            "$PY" -m infill.cli eval humaneval-infilling --split single-line --model "$model" \
                --out "$out/single-line" --quiet
            # 80 lines of the held-out package (detect-secrets), through the language server's completion,
            # beside the copy baseline; the candidate ships only if it beats both
            "$PY" -m infill.cli eval rest-of-line --model "$model" --out "$out/rest-of-line" --quiet
        done
        "$PY" -m infill.cli eval report runs/eval-ship/{shipped,candidate}/{bpb,single-line,rest-of-line} \
            --out runs/eval-ship/report
        ;;
    *)
        sed -n '2,12p' "$0" >&2
        exit 2
        ;;
esac
