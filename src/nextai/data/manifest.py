"""The prepared set's manifest: per-source counts after each step, token-length statistics, the config hash.

Pure functions: the counts come from the mixture's report, the lengths and cuts from the tokenized dataset's
`source`, `length` and `truncated` columns.
"""

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# The per-source columns, in pipeline order: read, source filter, unusable records, sampling, dedup,
# contamination, tokenization (examples whose prompt fills the cutoff, or with an empty response, are dropped).
STEPS = ("rows", "filtered", "unusable", "sampled", "after_dedup", "contaminated", "tokenized")


def token_stats(lengths: Sequence[int], truncated: Sequence[bool]) -> dict:
    """Count, total, mean, median, 95th percentile and longest of token lengths, and how many were cut (the
    tokenizer's own flag: an example of exactly `cutoff_len` tokens that fit whole was not cut)."""
    if not len(lengths):
        return {"examples": 0, "tokens": 0, "mean": 0.0, "median": 0.0, "p95": 0.0, "max": 0, "cut": 0}
    values = np.asarray(lengths)
    return {"examples": int(values.size), "tokens": int(values.sum()), "mean": round(float(values.mean()), 1),
            "median": float(np.median(values)), "p95": round(float(np.percentile(values, 95)), 1),
            "max": int(values.max()), "cut": int(sum(bool(t) for t in truncated))}


def group_by_source(sources: Sequence[str], values: Sequence) -> dict[str, list]:
    """One column of the tokenized set split by source, sources in order of first appearance."""
    grouped: dict[str, list] = defaultdict(list)
    for source, value in zip(sources, values):
        grouped[source].append(value)
    return dict(grouped)


def build_manifest(config_hash: str, description: str, counts: dict[str, dict], lengths: dict[str, list[int]],
                   truncated: dict[str, list[bool]], cutoff_len: int, extra: dict) -> dict:
    """The manifest: `counts` holds each source's step counts (the mixture report's), `lengths` its token lengths
    after tokenization and `truncated` which of them were cut; `extra` adds the dedup/contamination reports and
    where things are."""
    sources = {}
    for name in dict.fromkeys([*counts, *lengths]):
        row = {"title": counts.get(name, {}).get("title", name), "format": counts.get(name, {}).get("format", "-")}
        row.update({step: counts.get(name, {}).get(step) for step in STEPS[:-1]})
        row["tokenized"] = len(lengths.get(name, []))
        row["tokens"] = token_stats(lengths.get(name, []), truncated.get(name, []))
        if counts.get(name, {}).get("notes"):
            row["notes"] = counts[name]["notes"]
        sources[name] = row
    every_length = [n for values in lengths.values() for n in values]
    every_flag = [t for values in truncated.values() for t in values]
    return {"config_hash": config_hash, "description": description, "cutoff_len": cutoff_len,
            "steps": list(STEPS), "sources": sources, "total": token_stats(every_length, every_flag), **extra}


def manifest_hash(path: Path) -> str | None:
    """The config hash recorded in an existing manifest, or None (no manifest, or an unreadable one)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("config_hash")
    except (OSError, ValueError, AttributeError):
        return None
