"""`nextai prepare`: build the configured data once (read, filter, mix, dedup, tokenize) and describe it.

The expensive steps are cached by the mixture and the datamodule under their fingerprints, so `fit` with the same
config reuses them. Next to that, the output directory gets `manifest.json` (per-source counts after each step,
token-length statistics, the config hash; rewritten only when the config hash changes) and one token-length
histogram per source; the same numbers are printed as a table.
"""

import logging
import re
from collections import Counter
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from nextai.atomic import atomic_path, write_json
from nextai.data.datamodule import InstructionDataModule
from nextai.data.manifest import build_manifest, group_by_source, manifest_hash
from nextai.data.mixture import Mixture
from nextai.data.records import record_format

log = logging.getLogger(__name__)

PREPARED_DIR = "data"  # under the run directory (trainer.default_root_dir) unless --output_dir says otherwise
MANIFEST_FILE = "manifest.json"
HISTOGRAM_DIR = "histograms"


def prepare(datamodule: InstructionDataModule, output_dir: Path, console: Console | None = None,
            show: int = 0) -> dict:
    """Build (or reuse) the prepared set of `datamodule`, write its manifest and histograms, print the table and
    `show` rendered training examples."""
    source = datamodule.source
    if isinstance(source, Mixture):
        report = source.report()
        counts = report["sources"]
        extra = {"records_fingerprint": source.fingerprint(), "mixture_path": str(source.cache_path()),
                 "dedup": report.get("dedup"), "contamination": report.get("contamination")}
    else:  # a single file or hub dataset: no sampling or dedup, every record counts as read and kept
        records = source.load()
        per_source = Counter(record["source"] for record in records)
        formats = {name: " + ".join(sorted({record_format(r) for r in records if r["source"] == name}))
                   for name in per_source}
        counts = {name: {"rows": n, "filtered": 0, "unusable": 0, "sampled": n, "after_dedup": n,
                         "contaminated": 0, "format": formats[name]} for name, n in per_source.items()}
        extra = {"records_fingerprint": source.fingerprint()}

    datamodule.prepare_data()
    import datasets

    tokenized = datasets.load_from_disk(str(datamodule.tokenized_path()))
    lengths = group_by_source(tokenized["source"], [int(n) for n in tokenized["length"]])
    truncated = group_by_source(tokenized["source"], tokenized["truncated"])
    config_hash = datamodule.cache_key()
    extra["tokenized_path"] = str(datamodule.tokenized_path())
    manifest = build_manifest(config_hash, source.describe(), counts, lengths, truncated, datamodule.cutoff_len,
                              extra)

    path = output_dir / MANIFEST_FILE
    unchanged = manifest_hash(path) == config_hash
    histograms = output_dir / HISTOGRAM_DIR
    for name, values in lengths.items():
        target = histograms / f"{file_name(name)}.png"
        if not (unchanged and target.exists()):
            write_histogram(target, name, values, datamodule.cutoff_len)
    if unchanged:
        log.info("prepare: %s is up to date (config hash %s)", path, config_hash)
    else:
        write_json(path, manifest)
        log.info("prepare: wrote %s and %d histograms in %s", path, len(lengths), histograms)
    console = console or Console()
    print_summary(manifest, console)
    if show:
        datamodule.setup("prepare")
        show_examples(tokenized, datamodule.tokenizer, show, console, datamodule.prompt_format)
    return manifest


def show_examples(tokenized, tokenizer, count: int, console: Console, prompt_format=None) -> None:
    """The first `count` examples as the model reads them, the trained tokens highlighted (what `axolotl
    preprocess --debug` shows): green on black is learned, dim is context (label -100)."""
    from rich.rule import Rule
    from rich.text import Text

    from nextai.data.tokenize import IGNORE_INDEX

    if prompt_format is not None:
        console.print(f"prompt format: {prompt_format.describe()}")
    for index in range(min(count, len(tokenized))):
        example = tokenized[index]
        text = Text()
        for token, label in zip(example["input_ids"], example["labels"]):
            piece = tokenizer.decode([token], skip_special_tokens=False)
            text.append(piece, style="bold green" if label != IGNORE_INDEX else "dim")
        learned = sum(label != IGNORE_INDEX for label in example["labels"])
        console.print(Rule(f"example {index} ({example['source']}): {len(example['input_ids'])} tokens, "
                           f"{learned} trained{', cut at cutoff_len' if example['truncated'] else ''}",
                           align="left"))
        console.print(text)
    console.print(Rule(style="dim"))


def file_name(source: str) -> str:
    """A source name as a file name (names of plain-file sources can be paths)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", source).strip("_") or "source"


def write_histogram(path: Path, name: str, lengths: list[int], cutoff_len: int) -> None:
    """A token-length histogram of one source, the cutoff marked, written atomically as PNG."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    figure = Figure(figsize=(6.4, 3.6), layout="constrained")
    axes = figure.subplots()
    axes.hist(lengths, bins=min(50, max(5, len(set(lengths)))), color="#4c72b0")
    axes.axvline(cutoff_len, color="#c44e52", linestyle="--", label=f"cutoff_len {cutoff_len}")
    axes.set_title(f"{name}: {len(lengths)} examples")
    axes.set_xlabel("tokens per example (prompt + response)")
    axes.set_ylabel("examples")
    axes.legend()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)


def _cell(value) -> str:
    if value is None or isinstance(value, str):
        return value or "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


COUNT_COLUMNS = {"format": "format", "rows": "read", "filtered": "filtered", "unusable": "unusable", "sampled": "sampled",
                 "after_dedup": "deduped", "contaminated": "contam.", "tokenized": "tokenized"}
LENGTH_COLUMNS = ("examples", "tokens", "mean", "median", "p95", "max", "cut")


def print_summary(manifest: dict, console: Console) -> None:
    """The manifest as two tables: per source, the records after each step, then the token lengths."""
    style = dict(title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)  # fits 80 columns
    counts = Table(title="records per step", **style)
    lengths = Table(title=f"tokens per example (cutoff_len {manifest['cutoff_len']})", **style)
    for table, columns in ((counts, COUNT_COLUMNS.values()), (lengths, LENGTH_COLUMNS)):
        table.add_column("source", no_wrap=True)
        for column in columns:
            table.add_column(column, justify="right")
    totals = Counter()
    for name, row in manifest["sources"].items():
        values = [row[step] for step in COUNT_COLUMNS]
        counts.add_row(name, *map(_cell, values))
        totals.update({step: value for step, value in zip(COUNT_COLUMNS, values) if isinstance(value, int)})
        lengths.add_row(name, *(_cell(row["tokens"][column]) for column in LENGTH_COLUMNS))
    counts.add_section()
    counts.add_row("total", *(_cell(totals.get(step)) for step in COUNT_COLUMNS))
    lengths.add_section()
    lengths.add_row("total", *(_cell(manifest["total"][column]) for column in LENGTH_COLUMNS))
    console.print(f"prepared data: {manifest['description']}")
    console.print(counts)
    console.print(lengths)
    if manifest.get("dedup"):
        dedup = manifest["dedup"]
        console.print(f"dedup: {dedup['dropped']:,} near-duplicates dropped (cosine > {dedup['threshold']}, "
                      f"{dedup['embedder']})")
    if manifest.get("contamination"):
        found = manifest["contamination"]
        console.print(f"contamination: {found['dropped']:,} examples dropped (cosine > {found['threshold']} to one "
                      f"of {found['questions']:,} evaluation questions)")
    console.print(f"config hash {manifest['config_hash']}; tokenized data: {manifest['tokenized_path']}")
