"""Mixtures: exact fractions and counts, seeded and reproducible samples, the cache, and clear errors."""

import json

import pytest

from nextai.data.dedup import Dedup
from nextai.data.mixture import Component, Mixture, sample_indices, take_count
from nextai.data.dataset import AlpacaSource
from nextai.data.sources import OpenPlatypus
from nextai.errors import NextaiError


def write_source(path, count: int, tag: str) -> str:
    """`count` distinct Alpaca records (instruction `tag-i`) in a local file."""
    path.write_text("".join(json.dumps({"instruction": f"{tag}-{i}", "input": "", "output": f"answer {i}"}) + "\n"
                            for i in range(count)), encoding="utf-8")
    return str(path)


@pytest.fixture
def files(tmp_path):
    return {"alpaca": write_source(tmp_path / "alpaca.jsonl", 1000, "alpaca"),
            "codegen": write_source(tmp_path / "codegen.jsonl", 400, "codegen"),
            "flan": write_source(tmp_path / "flan.jsonl", 300, "flan")}


def mixture(files, tmp_path, seed=42, **amounts) -> Mixture:
    """alpaca and codegen (registered adapters reading local files) and a configured AlpacaSource named flan."""
    components = [Component("alpaca", location=files["alpaca"], **amounts.get("alpaca", {})),
                  Component("codegen", location=files["codegen"], **amounts.get("codegen", {})),
                  Component(AlpacaSource(files["flan"], name="flan"), **amounts.get("flan", {}))]
    return Mixture(components, seed=seed, dedup=None, cache_dir=str(tmp_path / "cache"))


def by_source(records) -> dict[str, list[str]]:
    grouped = {}
    for record in records:
        grouped.setdefault(record["source"], []).append(record["instruction"])
    return grouped


# ------------------------------------------------------------------------------------------------ pure logic
def test_take_count_is_exact():
    assert take_count(1000, 0.1, None, "x") == 100
    assert take_count(18357, 0.2, None, "x") == 3671  # 3671.4
    assert take_count(5, 0.5, None, "x") == 3  # halves round up, the same on every machine
    assert take_count(44972, 0.1, None, "x") == 4497
    assert take_count(7, None, None, "x") == 7 and take_count(7, 1.0, None, "x") == 7
    assert take_count(15011, None, 2000, "x") == 2000
    with pytest.raises(NextaiError, match="flan: count 2000 asks for more records than the 300 available"):
        take_count(300, None, 2000, "flan")


def test_sample_indices_are_seeded_sorted_and_per_source():
    first = sample_indices(1000, 100, 42, "codegen")
    assert first == sample_indices(1000, 100, 42, "codegen")
    assert first == sorted(set(first)) and len(first) == 100 and all(0 <= i < 1000 for i in first)
    assert first != sample_indices(1000, 100, 43, "codegen")
    assert first != sample_indices(1000, 100, 42, "faithdial")  # each source draws on its own
    assert sample_indices(10, 10, 42, "x") == list(range(10))


# ------------------------------------------------------------------------------------------------ mixtures
def test_fractions_and_counts_are_exact(files, tmp_path):
    mix = mixture(files, tmp_path, codegen={"fraction": 0.1}, flan={"count": 30})
    grouped = by_source(mix.load())
    assert {k: len(v) for k, v in grouped.items()} == {"alpaca": 1000, "codegen": 40, "flan": 30}
    report = mix.report()
    assert report["sources"]["codegen"] == {**report["sources"]["codegen"], "rows": 400, "available": 400,
                                            "sampled": 40, "after_dedup": 40, "kept": 40}
    assert report["total"] == 1070 and report["description"] == "mixture alpaca + codegen(10%) + flan(30)"


def test_same_seed_same_records_other_seed_other_sample(files, tmp_path):
    one = by_source(mixture(files, tmp_path / "a", codegen={"fraction": 0.1}).load())
    two = by_source(mixture(files, tmp_path / "b", codegen={"fraction": 0.1}).load())
    other = by_source(mixture(files, tmp_path / "c", seed=7, codegen={"fraction": 0.1}).load())
    assert one == two
    assert one["codegen"] != other["codegen"] and len(other["codegen"]) == 40
    # records keep their order in the source file
    assert one["codegen"] == sorted(one["codegen"], key=lambda s: int(s.split("-")[1]))


def test_changing_one_component_leaves_the_others_sample(files, tmp_path):
    base = by_source(mixture(files, tmp_path / "a", codegen={"fraction": 0.1}, flan={"count": 30}).load())
    more = by_source(mixture(files, tmp_path / "b", codegen={"fraction": 0.2}, flan={"count": 30}).load())
    assert base["flan"] == more["flan"]
    assert len(more["codegen"]) == 80


def test_built_mixture_is_cached_and_reused(files, tmp_path, monkeypatch):
    mix = mixture(files, tmp_path, codegen={"fraction": 0.1})
    records = mix.load()
    assert (mix.cache_path() / "records.jsonl").is_file() and (mix.cache_path() / "report.json").is_file()
    monkeypatch.setattr(Mixture, "build", lambda self: pytest.fail("rebuilt a cached mixture"))
    again = mixture(files, tmp_path, codegen={"fraction": 0.1})
    assert again.fingerprint() == mix.fingerprint() and again.load() == records


def test_fingerprint_follows_everything_that_changes_the_records(files, tmp_path):
    base = mixture(files, tmp_path, codegen={"fraction": 0.1}).fingerprint()
    assert mixture(files, tmp_path, codegen={"fraction": 0.2}).fingerprint() != base
    assert mixture(files, tmp_path, seed=1, codegen={"fraction": 0.1}).fingerprint() != base
    with_dedup = mixture(files, tmp_path, codegen={"fraction": 0.1})
    with_dedup.dedup = Dedup(threshold=0.8)
    assert with_dedup.fingerprint() != base
    write_source(tmp_path / "alpaca.jsonl", 999, "alpaca")
    assert mixture(files, tmp_path, codegen={"fraction": 0.1}).fingerprint() != base
    platypus = "bundled:sources/platypus.jsonl"
    filtered = Mixture([Component(OpenPlatypus(platypus))], dedup=None).fingerprint()
    assert Mixture([Component(OpenPlatypus(platypus, llm_generated=[]))], dedup=None).fingerprint() != filtered


def test_configured_source_object_brings_its_own_options(tmp_path):
    unfiltered = Mixture([Component(OpenPlatypus("bundled:sources/platypus.jsonl", llm_generated=[]))],
                         dedup=None, cache_dir=str(tmp_path))
    assert len(unfiltered.load()) == 8
    report = unfiltered.report()["sources"]["platypus"]
    assert (report["rows"], report["filtered"], report["kept"]) == (8, 0, 8)


@pytest.mark.parametrize(("component", "message"), [
    (Component("codegen", fraction=0.0), r"components\[0\].fraction must be in \(0, 1\] .* got 0.0"),
    (Component("codegen", fraction=1.5), r"components\[0\].fraction must be in \(0, 1\] .* got 1.5"),
    (Component("codegen", fraction=-0.1), r"components\[0\].fraction must be in \(0, 1\]"),
    (Component("codegen", count=0), r"components\[0\].count must be a positive number of records, got 0"),
    (Component("codegen", fraction=0.5, count=3), r"components\[0\]: give a fraction or a count, not both"),
    (Component("codgen"), r"unknown data source 'codgen'; known sources: alpaca, arb, codegen,"),
    (Component(OpenPlatypus(), location="x.jsonl"), r"`location` goes with a source name"),
])
def test_bad_components_are_named(component, message):
    mix = Mixture([component])  # checked on first use, so the CLI shows the message alone
    with pytest.raises(NextaiError, match=message):
        mix.fingerprint()


def test_a_source_mixed_in_twice_and_an_empty_mixture_are_errors():
    with pytest.raises(NextaiError, match="codegen appears more than once"):
        Mixture([Component("codegen"), Component("codegen", fraction=0.1)]).fingerprint()
    with pytest.raises(NextaiError, match="a mixture needs at least one source"):
        Mixture([]).load()
    with pytest.raises(NextaiError, match=r"dedup.threshold must be a cosine similarity in \(0, 1\], got 1.5"):
        Mixture([Component("codegen")], dedup=Dedup(threshold=1.5)).fingerprint()


def test_count_larger_than_the_source_is_an_error(files, tmp_path):
    with pytest.raises(NextaiError, match="codegen: count 500 asks for more records than the 400 available"):
        mixture(files, tmp_path, codegen={"count": 500}).load()


def test_conversation_sources_keep_their_turns_only_where_asked(tmp_path):
    flat = Mixture([Component("lima", location="bundled:sources/lima.jsonl")], dedup=None,
                   cache_dir=str(tmp_path / "cache")).load()
    assert all("instruction" in r for r in flat)  # the report's flattening stays the default
    kept = Mixture([Component("lima", location="bundled:sources/lima.jsonl", format="messages"),
                    Component("guanaco", location="bundled:sources/guanaco.jsonl", format="messages"),
                    Component("dolly", location="bundled:sources/dolly.jsonl")],
                   dedup=None, cache_dir=str(tmp_path / "cache"))
    records = kept.load()
    chats = [r for r in records if r["source"] in ("lima", "guanaco")]
    assert chats and all(r["messages"][-1]["role"] == "assistant" for r in chats)
    assert any(sum(m["role"] == "assistant" for m in r["messages"]) > 1 for r in chats)  # multi-turn kept whole
    assert all("instruction" in r for r in records if r["source"] == "dolly")
    assert {name: row["format"] for name, row in kept.report()["sources"].items()} == \
           {"lima": "messages", "guanaco": "messages", "dolly": "alpaca"}


def test_any_dataset_mixes_in_by_its_path(tmp_path):
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"conversations": [{"from": "human", "value": "Hi"},
                                                  {"from": "gpt", "value": "Hello."}]}) + "\n")
    records = Mixture([Component(str(chats)), Component("dolly", location="bundled:sources/dolly.jsonl",
                                                        fraction=0.5)],
                      dedup=None, cache_dir=str(tmp_path / "cache")).load()
    assert [r["messages"] for r in records if r["source"] == "chats"] == \
           [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]]


@pytest.mark.parametrize("component, message", [
    (Component("dolly", format="messages"), "dolly: format messages keeps a conversation's turns; dolly has none"),
    (Component("lima", columns={"output": "answer"}), "components\\[0\\].columns: lima reads its own schema"),
    (Component("dolyy"), "unknown data source 'dolyy'"),
])
def test_format_settings_that_cannot_apply_are_refused(tmp_path, component, message):
    with pytest.raises(NextaiError, match=message):
        Mixture([component], dedup=None, cache_dir=str(tmp_path / "cache")).sources
