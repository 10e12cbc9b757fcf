"""The evaluation harness behind `infill eval`: one module per evaluation.

- `sandbox`: runs untrusted generated programs (the only place generated code executes); `cgroups`
  gives each of them its memory and process limit.
- `humaneval`: HumanEval-infilling pass@k, and scoring given completions.
- `perplexity`: bits per byte and token perplexity per language on held-out files.
- `identifiers`: type and name prediction on held-out Python (InCoder's protocols).
- `report`: Markdown table and plots over runs, beside published figures.
- `cli`: the `infill eval` subcommands.

Every evaluation writes its per-item JSONL and a `summary.json` to `--out`, and prints the summary as
one JSON line, last.
"""
