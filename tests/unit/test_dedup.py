"""Dedup: the chunked greedy pass equals the plain one, memory stays bounded, MiniLM drops real paraphrases."""

import json
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nextai.data.dedup import Dedup, embed, keep_mask, load_embedder, nearest, read_questions
from nextai.data.mixture import Component, Mixture
from nextai.errors import NextaiError


def unit_rows(rng, count: int, dim: int) -> np.ndarray:
    rows = rng.standard_normal((count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def greedy(embeddings: np.ndarray, threshold: float, protected=None) -> np.ndarray:
    """The definition, one row at a time against every kept row (what keep_mask must equal)."""
    kept = []
    for i, row in enumerate(embeddings):
        if not kept or (embeddings[kept] @ row).max() <= threshold or (protected is not None and protected[i]):
            kept.append(i)
    mask = np.zeros(len(embeddings), dtype=bool)
    mask[kept] = True
    return mask


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 60), chunk=st.integers(1, 17),
       threshold=st.floats(0.3, 0.95))
def test_chunked_pass_equals_the_plain_greedy_pass(seed, count, chunk, threshold):
    rng = np.random.default_rng(seed)
    base = unit_rows(rng, max(1, count // 3), 4)  # few directions in 4 dims: many near-duplicates
    rows = base[rng.integers(0, len(base), count)] + 0.3 * rng.standard_normal((count, 4)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    protected = rng.random(count) < 0.2
    assert (keep_mask(rows, threshold, chunk_size=chunk) == greedy(rows, threshold)).all()
    assert (keep_mask(rows, threshold, protected, chunk_size=chunk) == greedy(rows, threshold, protected)).all()


def test_greedy_order_and_protection():
    a = np.array([1.0, 0.0], dtype=np.float32)
    near_a = np.array([0.95, np.sqrt(1 - 0.95**2)], dtype=np.float32)  # cos(a, near_a) = 0.95
    far = np.array([0.0, 1.0], dtype=np.float32)
    rows = np.stack([a, near_a, far, a])
    assert keep_mask(rows, 0.9).tolist() == [True, False, True, False]
    assert keep_mask(rows, 0.96).tolist() == [True, True, True, False]  # 0.95 does not exceed 0.96
    assert keep_mask(rows, 0.9, protected=np.array([False, True, False, False])).tolist() == [True, True, True, False]


def test_memory_stays_bounded_on_50k_embeddings():
    rng = np.random.default_rng(0)
    count, dim = 50_000, 128  # the V5 mixture's size; the width (MiniLM: 384) only changes the time
    rows = unit_rows(rng, count, dim)
    originals = rng.choice(count // 2, 100, replace=False)
    copies = originals + count // 2
    rows[copies] = rows[originals] + 0.01 * rng.standard_normal((100, dim)).astype(np.float32)
    rows[copies] /= np.linalg.norm(rows[copies], axis=1, keepdims=True)

    tracemalloc.start()  # numpy reports its allocations to tracemalloc
    try:
        keep = keep_mask(rows, 0.9)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    full_matrix = count * count * 4  # 10 GB: what an N x N similarity matrix would take
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert peak < full_matrix / 100
    assert keep[originals].all() and not keep[copies].any()
    assert keep.sum() == count - 100


def test_nearest_matches_brute_force():
    rng = np.random.default_rng(1)
    queries, references = unit_rows(rng, 50, 8), unit_rows(rng, 37, 8)
    similarity, index = nearest(queries, references, chunk_size=7)
    full = queries @ references.T
    assert (index == full.argmax(axis=1)).all()
    assert np.allclose(similarity, full.max(axis=1))


# ------------------------------------------------------------------------------------------------ real embeddings
PARAPHRASES = [
    ("What is the boiling point of water at sea level?", "At sea level, what is the boiling point of water?"),
    ("How do I reverse a list in Python?", "How can I reverse a list in Python?"),
    ("Write a short poem about the autumn leaves falling.", "Write a short poem about falling autumn leaves."),
    ("Explain why the sky looks blue during the day.", "Explain why the sky appears blue in the daytime."),
    ("Give me three tips for sleeping better at night.", "Give me three tips to sleep better at night."),
]
DISTINCT = [
    "What is the boiling point of ethanol?",
    "How do I sort a dictionary by value in Python?",
    "Write a short story about a lighthouse keeper.",
    "Explain how rainbows form after a storm.",
    "List three benefits of regular exercise.",
    "Who painted the ceiling of the Sistine Chapel?",
]


@pytest.fixture(scope="module")
def minilm():
    return load_embedder("all-MiniLM-L6-v2", "cpu")  # the offline copy: no hub


def test_minilm_drops_paraphrases_and_keeps_distinct_questions(minilm):
    texts = [first for first, _ in PARAPHRASES] + DISTINCT + [second for _, second in PARAPHRASES]
    keep = keep_mask(embed(minilm, texts, 16), 0.9)
    kept = [t for t, k in zip(texts, keep) if k]
    assert kept == [first for first, _ in PARAPHRASES] + DISTINCT


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_mixture_dedups_across_sources_and_reports_contamination_apart(tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", [{"instruction": t, "input": "", "output": "x"}
                                               for t, _ in PARAPHRASES])
    second = write_jsonl(tmp_path / "b.jsonl", [{"instruction": t, "input": "", "output": "y"}
                                                for t in [p for _, p in PARAPHRASES[:2]] + DISTINCT])
    questions = tmp_path / "eval.txt"
    questions.write_text("Who was the painter of the Sistine Chapel ceiling?\nWhat is the capital of Peru?\n")
    mix = Mixture([Component("alpaca", location=first), Component("codegen", location=second)],
                  dedup=Dedup(eval_questions=[str(questions)], device="cpu"), cache_dir=str(tmp_path / "cache"))
    records = mix.load()
    report = mix.report()
    assert report["sources"]["codegen"]["sampled"] == 8
    assert report["sources"]["codegen"]["after_dedup"] == 6  # the two paraphrases of alpaca's records
    assert report["sources"]["codegen"]["contaminated"] == 1 and report["sources"]["alpaca"]["contaminated"] == 0
    assert report["dedup"]["dropped"] == 2 and report["contamination"]["dropped"] == 1
    closest = report["contamination"]["closest"][0]
    assert closest["example"] == "Who painted the ceiling of the Sistine Chapel?" and closest["similarity"] > 0.9
    assert len(records) == 5 + 5 and not any("Sistine" in r["instruction"] for r in records)


def test_eval_question_files(tmp_path):
    (tmp_path / "q.jsonl").write_text('"plain string"\n{"question": "from an object"}\n')
    (tmp_path / "q.txt").write_text("one\n\ntwo\n")
    assert read_questions([str(tmp_path / "q.txt"), str(tmp_path / "q.jsonl")]) == ["one", "two", "plain string",
                                                                                      "from an object"]
    (tmp_path / "bad.jsonl").write_text('{"prompt": "no question field"}\n')
    with pytest.raises(NextaiError, match=r"bad.jsonl:1: expected a question string or an object with a 'question'"):
        read_questions([str(tmp_path / "bad.jsonl")])
    with pytest.raises(NextaiError, match="dedup.eval_questions: file not found: .*missing.txt"):
        read_questions([str(tmp_path / "missing.txt")])


def test_settings_out_of_range():
    with pytest.raises(NextaiError, match=r"dedup.contamination_threshold must be a cosine similarity in \(0, 1\]"):
        Dedup(contamination_threshold=0).check()
    assert Dedup(threshold=0.8).contamination_cutoff == 0.8
    assert Dedup(contamination_threshold=0.7).contamination_cutoff == 0.7
