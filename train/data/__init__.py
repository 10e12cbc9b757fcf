"""Code corpus curation: `infill data build` and `infill data tokenizer`.

Stages, each a function from an iterator of records to an iterator of records (`records`), rules
in its docstring, removals counted in the run report:

    harvest.harvest               read files; skip binaries and undecodable text
    licenses.filter_licenses      SPDX license per file; keep permissive ones
    filters.filter_quality        size, line length, alphanumeric share, auto-generated markers
    redact.redact                 emails, IP addresses, keys and tokens -> placeholders
    decontaminate.decontaminate   drop files sharing 13-word n-grams with HumanEval-infilling
    dedup                         exact and near (MinHash LSH) duplicates: datatrove's steps, set for code
    split.assign_split            train / validation by repository or package

`steps` wraps them as datatrove `PipelineStep`s and `pipeline.build` runs them on datatrove's
local, Slurm or Ray executor into shards (`shards`) and the report (`report`). See docs/data.md.
"""
