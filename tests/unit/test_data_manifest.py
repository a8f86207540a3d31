"""The manifest's numbers: token-length statistics per source and the step counts, from plain lists."""

import json

from nextai.data.manifest import STEPS, build_manifest, group_by_source, manifest_hash, token_stats


def test_token_stats():
    # two examples reach 256 tokens; only the one the tokenizer flagged was cut (the other fit whole)
    stats = token_stats([10, 20, 30, 256, 256], [False, False, False, False, True])
    assert stats == {"examples": 5, "tokens": 572, "mean": 114.4, "median": 30.0, "p95": 256.0, "max": 256, "cut": 1}
    assert token_stats([], [])["examples"] == 0


def test_lengths_are_grouped_by_source_in_order_of_appearance():
    grouped = group_by_source(["b", "a", "b"], [3, 1, 5])
    assert grouped == {"b": [3, 5], "a": [1]} and list(grouped) == ["b", "a"]


def test_manifest_joins_step_counts_and_token_lengths():
    counts = {"dolly": {"title": "Dolly-15k", "rows": 10, "filtered": 0, "unusable": 1, "sampled": 9, "after_dedup": 8, "contaminated": 1,
                        "notes": []},
              "platypus": {"rows": 8, "filtered": 2, "unusable": 0, "sampled": 6, "after_dedup": 6, "contaminated": 0,
                           "notes": ["llm_generated lists 'x', which no record has"]}}
    lengths = {"dolly": [100, 1024, 50, 60, 70, 80, 90], "platypus": [10] * 6}
    truncated = {"dolly": [False, True, False, False, False, False, False], "platypus": [False] * 6}
    manifest = build_manifest("abc", "mixture dolly + platypus", counts, lengths, truncated, 1024,
                              {"dedup": {"dropped": 1}})
    assert manifest["steps"] == list(STEPS) and manifest["config_hash"] == "abc" and manifest["dedup"]["dropped"] == 1
    dolly = manifest["sources"]["dolly"]
    assert [dolly[step] for step in STEPS] == [10, 0, 1, 9, 8, 1, 7]
    assert dolly["tokens"]["cut"] == 1 and "notes" not in dolly and dolly["title"] == "Dolly-15k"
    assert manifest["sources"]["platypus"]["title"] == "platypus"  # no title given: the name
    assert manifest["sources"]["platypus"]["notes"] == ["llm_generated lists 'x', which no record has"]
    assert manifest["total"]["examples"] == 13 and manifest["total"]["tokens"] == 1474 + 60


def test_manifest_hash_reads_what_was_written(tmp_path):
    assert manifest_hash(tmp_path / "manifest.json") is None
    (tmp_path / "manifest.json").write_text(json.dumps({"config_hash": "abc"}))
    assert manifest_hash(tmp_path / "manifest.json") == "abc"
    (tmp_path / "manifest.json").write_text("{not json")
    assert manifest_hash(tmp_path / "manifest.json") is None
