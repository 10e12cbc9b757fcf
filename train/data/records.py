"""The record every stage passes on, and the tombstone a rule leaves behind.

A record is a plain JSON-ready dict, so any engine can carry it (here datatrove, as a `Document`:
see `steps.to_document`):

    text      file contents (str; "" once removed)
    path      path inside its source, with "/" separators
    language  "python", "c", ... (see `infill.corpus.LANGUAGES`)
    source    repository or package name ("python-stdlib" for the standard library)
    version   package version or git commit, "" when unknown
    license   SPDX id or expression, "unknown" when none was found
    group     unit of the train/validation split (the source, or a stdlib top-level module)
    bytes     size of the file in bytes (UTF-8)

Rules never delete a record: they replace it by a tombstone, the same record with `removed` set to
the rule's name and `text` emptied, so counts survive to the report whatever runs the stages. Every
stage passes tombstones through untouched; the datatrove step that runs the stages counts them
(`report.record_counts`) and drops them. Keys starting with "_" are working state of the
pipeline (absolute file path, fingerprints) and never reach the shards.
"""
from __future__ import annotations

from infill.corpus import OUTPUT_FIELDS, Record

__all__ = ["OUTPUT_FIELDS", "Record", "drop", "is_removed", "to_output"]


def drop(record: Record, rule: str) -> Record:
    """Turn `record` into a tombstone removed by `rule` (e.g. "filter.long_line")."""
    tomb = {k: v for k, v in record.items() if not k.startswith("_")}
    tomb["text"] = ""
    tomb["removed"] = rule
    return tomb


def is_removed(record: Record) -> bool:
    """True for a tombstone."""
    return "removed" in record


def to_output(record: Record) -> Record:
    """The fields written to a shard, in a fixed order."""
    return {k: record[k] for k in OUTPUT_FIELDS if k in record}
