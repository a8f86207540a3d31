"""A training mixture declared in YAML: sources, how much of each (a fraction or a count), a seed, then dedup.

    data:
      source:
        class_path: nextai.data.mixture.Mixture
        init_args:
          components:
            - source: dolly                # Dolly(100%)
            - source: platypus             # Filtering Platypus
            - {source: codegen, fraction: 0.1}      # Codegen(10%)
            - {source: flan_cot, count: 2000}       # FLAN-v2-Cot(2k)
            - {source: lima, format: messages}      # LIMA with its turns kept (chat template)
            - {source: data/chats.parquet, format: sharegpt}  # any dataset, in any format
          dedup: {threshold: 0.9}

Building it (read, filter, sample, dedup) is the expensive part of data preparation; the result is kept under
`cache_dir/mixtures/<fingerprint>` with a report of what every step kept, and reused while the fingerprint (the
components, their files or hub ids, the adapters' code, the seed, the dedup settings) stays the same.
"""

import hashlib
import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from nextai.atomic import atomic_path
from nextai.data.dedup import (Dedup, embed, keep_mask, load_embedder, nearest, prompt_text, question_files,
                               read_questions)
from nextai.data.dataset import DatasetSource
from nextai.data.formats import Format, check_columns
from nextai.data.readers import looks_local
from nextai.data.records import Record, RecordSource, hash_files, read_json_objects, record_format
from nextai.data.sources import SOURCES, NativeSource, SourceRead, source_class
from nextai.errors import NextaiError
from nextai.paths import default_cache_dir

log = logging.getLogger(__name__)

RECORDS_FILE = "records.jsonl"
REPORT_FILE = "report.json"
CONTAMINATION_EXAMPLES = 20  # closest training/evaluation pairs listed in the report


@dataclass
class Component:
    """One source of a mixture and how much of it to take.

    Args:
        source: a registered source name (`dolly`, `platypus`, ...: see `nextai.data.sources`), a dataset (file,
            folder or hub id, read as `format` with `columns`), or a configured source object
            (class_path/init_args), for example `OpenPlatypus` with its own `llm_generated` list.
        fraction: the share of the source's records to take, in (0, 1] (`Codegen(10%)` is 0.1). Default: all.
        count: or an exact number of records (`FLAN-v2-Cot(2k)` is 2000).
        location: with a source name: a local file or directory in the source's native schema (or another hub
            id) instead of its default hub dataset.
        dedup: false keeps every record of this source through dedup (they still count as kept for the others).
        format: with a conversation source (guanaco, lima, faithdial), `messages` keeps its turns (the report's
            Alpaca flattening is the default); with a dataset, its format (default `auto`).
        columns: with a dataset, its names for nextai's fields and roles.
    """

    source: str | RecordSource
    fraction: float | None = None
    count: int | None = None
    location: str | None = None
    dedup: bool = True
    format: Format | None = None
    columns: dict[str, str] | None = None


@dataclass
class SourceCounts:
    """How many records of one component each step let through (the manifest's per-source columns)."""

    title: str  # the dataset's name (`Open-Platypus (filtered)`), or the source's description
    rows: int  # native records read
    filtered: int  # removed by the source's own filter (LLM-generated parts of Open-Platypus)
    unusable: int  # could not become an Alpaca record
    available: int  # records to sample from
    sampled: int  # after the fraction or count
    after_dedup: int = 0
    contaminated: int = 0  # dropped as too similar to an evaluation question
    kept: int = 0  # in the mixture
    notes: list[str] = field(default_factory=list)
    format: str = "alpaca"  # the records' format: alpaca, messages, prompt_completion


# ------------------------------------------------------------------------------------------------ pure logic
def check_component(component: Component, where: str) -> None:
    if component.fraction is not None and component.count is not None:
        raise NextaiError(f"{where}: give a fraction or a count, not both")
    if component.fraction is not None and not 0 < component.fraction <= 1:
        raise NextaiError(f"{where}.fraction must be in (0, 1] (0.1 takes 10%), got {component.fraction}")
    if component.count is not None and component.count < 1:
        raise NextaiError(f"{where}.count must be a positive number of records, got {component.count}")
    if component.location is not None and not isinstance(component.source, str):
        raise NextaiError(f"{where}: `location` goes with a source name; a configured source takes its own")
    if (component.format or component.columns) and not isinstance(component.source, str):
        raise NextaiError(f"{where}: `format` and `columns` go with a source name or a dataset; a configured "
                          "source takes its own")
    check_columns(component.columns, f"{where}.columns")


def component_source(component: Component, where: str) -> RecordSource:
    """The source a component names: a registered adapter, a dataset, or the configured object itself."""
    if not isinstance(component.source, str):
        return component.source
    if component.source in SOURCES:
        if component.columns:
            raise NextaiError(f"{where}.columns: {component.source} reads its own schema; columns apply to datasets")
        format = component.format or "alpaca"
        if format not in ("alpaca", "messages"):
            raise NextaiError(f"{where}.format: {component.source} takes alpaca or messages, got '{format}'")
        keep_turns = {"format": format} if format == "messages" else {}  # sources without turns take no format
        return source_class(component.source)(location=component.location, **keep_turns)
    if component.location is not None or (not looks_local(component.source) and "/" not in component.source):
        source_class(component.source)  # `location` goes with a source name; unknown names list the known ones
    return DatasetSource(component.source, format=component.format or "auto", columns=component.columns)


def take_count(available: int, fraction: float | None, count: int | None, label: str) -> int:
    """How many records to take: round(fraction x available) (halves up), `count`, or all of them."""
    if count is not None:
        if count > available:
            raise NextaiError(f"{label}: count {count} asks for more records than the {available} available")
        return count
    if fraction is None:
        return available
    return int(np.floor(fraction * available + 0.5))


def sample_indices(available: int, take: int, seed: int, label: str) -> list[int]:
    """`take` of `available` record indices, drawn without replacement and returned in their original order.

    The draw depends only on the seed and the component's label, so adding or changing another component
    leaves this one's sample as it was.
    """
    if take >= available:
        return list(range(available))
    rng = random.Random(f"{seed}:{label}")
    return sorted(rng.sample(range(available), take))


def component_label(source: RecordSource) -> str:
    """The name a component's records are tagged and counted under: an adapter's `name`, a dataset's tag or file
    stem, else the source's description."""
    if isinstance(source, NativeSource):
        return source.name
    if isinstance(source, DatasetSource):
        return source.tag or Path(source.location).stem or source.location
    return getattr(source, "name", None) or source.describe()


def read_source(source: RecordSource) -> SourceRead:
    """Any source's records; an adapter also counts what its filter and its mapping dropped."""
    if isinstance(source, NativeSource):
        return source.read()
    records = source.load()
    return SourceRead(records=records, rows=len(records))


def resolve_sources(components: list[Component], dedup: Dedup | None) -> list[RecordSource]:
    """Each component's source object (a registered name becomes its adapter), after checking the settings."""
    if not components:
        raise NextaiError("data.source.components: a mixture needs at least one source")
    if dedup is not None:
        dedup.check()
    sources = []
    for index, component in enumerate(components):
        where = f"data.source.components[{index}]"
        check_component(component, where)
        sources.append(component_source(component, where))
    labels = [component_label(source) for source in sources]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise NextaiError(f"data.source.components: {', '.join(duplicates)} appears more than once; "
                          "a source can be mixed in once")
    return sources


# ------------------------------------------------------------------------------------------------ the mixture
class Mixture(RecordSource):
    """Records from several sources, each sampled to a fraction or a count with a fixed seed, then deduplicated.

    Args:
        components: the sources and how much of each to take (report Table 7).
        seed: the sampling seed.
        dedup: near-duplicate removal and the optional contamination pass; null turns both off.
        cache_dir: where built mixtures are kept (default: $NEXTAI_CACHE_DIR or ~/.cache/nextai).
    """

    def __init__(self, components: list[Component], seed: int = 42, dedup: Dedup | None = None,
                 cache_dir: str | None = None) -> None:
        self.components = components
        self.seed = seed
        self.dedup = dedup
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self._sources: list[RecordSource] | None = None
        self._fingerprint: str | None = None

    @property
    def sources(self) -> list[RecordSource]:
        """The components' sources, checked on first use: an error raised while LightningCLI builds this object
        would reach the user buried in a type-union message instead of as one line."""
        if self._sources is None:
            self._sources = resolve_sources(self.components, self.dedup)
        return self._sources

    @property
    def labels(self) -> list[str]:
        return [component_label(source) for source in self.sources]

    def describe(self) -> str:
        parts = []
        for label, component in zip(self.labels, self.components):
            if component.count is not None:
                parts.append(f"{label}({component.count})")
            elif component.fraction is not None:
                parts.append(f"{label}({component.fraction:.0%})")
            else:
                parts.append(label)
        return "mixture " + " + ".join(parts)

    def fingerprint(self) -> str:
        if self._fingerprint is None:  # hashes every local data file: once per object
            self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def _compute_fingerprint(self) -> str:
        code = b"".join(Path(__file__).with_name(name).read_bytes() for name in ("mixture.py", "dedup.py"))
        parts = {
            "code": hashlib.sha256(code).hexdigest(),
            "components": [{"label": label, "source": source.fingerprint(), "fraction": c.fraction,
                            "count": c.count, "dedup": c.dedup}
                           for label, source, c in zip(self.labels, self.sources, self.components)],
            "seed": self.seed,
            "dedup": asdict(self.dedup) if self.dedup else None,
        }
        if self.dedup and self.dedup.eval_questions:
            parts["eval_questions"] = hash_files(question_files(self.dedup.eval_questions))
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

    def cache_path(self) -> Path:
        return self.cache_dir / "mixtures" / self.fingerprint()

    # -------------------------------------------------------------------------------------------- results
    def load(self) -> list[Record]:
        path = self.cache_path()
        if not (path / REPORT_FILE).exists():
            self.build()
        else:
            log.info("mixture: reusing %s", path)
        return [obj for _, obj in read_json_objects(path / RECORDS_FILE)]

    def report(self) -> dict:
        """What every step kept, per source (built first when not cached)."""
        path = self.cache_path()
        if not (path / REPORT_FILE).exists():
            self.build()
        return json.loads((path / REPORT_FILE).read_text(encoding="utf-8"))

    def build(self) -> None:
        """Read, filter, sample and dedup every component; write the records and the report atomically."""
        records: list[Record] = []
        protected: list[bool] = []
        counts: dict[str, SourceCounts] = {}
        for label, source, component in zip(self.labels, self.sources, self.components):
            read = read_source(source)
            take = take_count(len(read.records), component.fraction, component.count, label)
            chosen = [{**read.records[i], "source": label}
                      for i in sample_indices(len(read.records), take, self.seed, label)]
            title = source.title if isinstance(source, NativeSource) else source.describe()
            formats = sorted({record_format(r) for r in read.records})
            counts[label] = SourceCounts(title=title, rows=read.rows, filtered=read.filtered, unusable=read.unusable,
                                         available=len(read.records), sampled=len(chosen), notes=read.notes,
                                         format=" + ".join(formats) or "-")
            records += chosen
            protected += [not component.dedup] * len(chosen)
            log.info("mixture: %s: %d of %d records", label, len(chosen), len(read.records))

        report = {"fingerprint": self.fingerprint(), "description": self.describe(), "seed": self.seed}
        if self.dedup is not None and records:
            records, report["dedup"], report["contamination"] = self._dedup(records, np.array(protected), counts)
        for label in counts:
            counts[label].kept = sum(1 for r in records if r["source"] == label)
            if self.dedup is None:
                counts[label].after_dedup = counts[label].sampled
        report["sources"] = {label: asdict(c) for label, c in counts.items()}
        report["total"] = len(records)
        if not records:
            raise NextaiError(f"{self.describe()}: no records left")
        with atomic_path(self.cache_path()) as tmp:
            tmp.mkdir()
            with open(tmp / RECORDS_FILE, "w", encoding="utf-8") as f:
                for record in records:
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
            (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        log.info("mixture: %d records in %s", len(records), self.cache_path())

    def _dedup(self, records: list[Record], protected: np.ndarray,
               counts: dict[str, SourceCounts]) -> tuple[list[Record], dict, dict | None]:
        settings = self.dedup
        model = load_embedder(settings.embedder, settings.device)
        vectors = embed(model, [prompt_text(r) for r in records], settings.batch_size)
        keep = keep_mask(vectors, settings.threshold, protected)
        for label in counts:
            counts[label].after_dedup = sum(1 for r, k in zip(records, keep) if k and r["source"] == label)
        dedup_report = {"threshold": settings.threshold, "embedder": settings.embedder,
                        "dropped": int((~keep).sum())}
        log.info("dedup: %d of %d examples dropped (cosine > %s)", (~keep).sum(), len(records), settings.threshold)
        records, vectors = [r for r, k in zip(records, keep) if k], vectors[keep]
        if not settings.eval_questions:
            return records, dedup_report, None

        questions = read_questions(settings.eval_questions)
        if not questions:
            raise NextaiError("dedup.eval_questions: the files hold no questions")
        similarity, closest = nearest(vectors, embed(model, questions, settings.batch_size))
        clean = similarity <= settings.contamination_cutoff
        for label in counts:
            counts[label].contaminated = sum(1 for r, c in zip(records, clean) if not c and r["source"] == label)
        worst = np.argsort(-similarity)[:CONTAMINATION_EXAMPLES]
        contamination = {
            "threshold": settings.contamination_cutoff, "questions": len(questions),
            "dropped": int((~clean).sum()),
            "closest": [{"source": records[i]["source"], "similarity": round(float(similarity[i]), 4),
                         "example": prompt_text(records[i])[:200], "question": questions[closest[i]][:200]}
                        for i in worst],
        }
        log.info("contamination: %d examples within %s of %d evaluation questions", (~clean).sum(),
                 settings.contamination_cutoff, len(questions))
        return [r for r, c in zip(records, clean) if c], dedup_report, contamination
