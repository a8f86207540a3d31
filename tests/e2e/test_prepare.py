"""`nextai prepare` end to end on the tiny mixture, and the report's configs v1-v7 as LightningCLI reads them."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from nextai.cli import NextaiCLI
from nextai.main import main
from nextai.data.mixture import Mixture

pytestmark = pytest.mark.slow
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = str(CONFIGS / "tiny.yaml")
TINY_SOURCES = ["alpaca", "dolly", "platypus", "lima", "faithdial", "multi_news", "codegen"]


@pytest.fixture(scope="module")
def deduped(tmp_path_factory) -> str:
    """tiny.yaml with the report's dedup, as its comment says to turn it on (the drills kept whole)."""
    text = Path(TINY).read_text()
    text = text.replace("      seed: 42\n", "      seed: 42\n      dedup:\n        threshold: 0.9\n")
    drills = "location: bundled:alpaca_tiny.jsonl\n"
    text = text.replace(drills, drills + "          dedup: false\n")
    path = tmp_path_factory.mktemp("configs") / "tiny-dedup.yaml"
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, deduped):
    run = tmp_path_factory.mktemp("prepare-run")
    main(["prepare", "--config", deduped, "--trainer.default_root_dir", str(run)])
    return run


def manifest(run: Path) -> dict:
    return json.loads((run / "data" / "manifest.json").read_text())


def test_prepare_writes_the_manifest_and_a_histogram_per_source(prepared):
    data = manifest(prepared)
    assert list(data["sources"]) == TINY_SOURCES
    platypus, codegen = data["sources"]["platypus"], data["sources"]["codegen"]
    assert (platypus["rows"], platypus["filtered"], platypus["sampled"]) == (8, 2, 6)  # LLM-written parts out
    assert platypus["title"] == "Open-Platypus (filtered)"
    assert (codegen["rows"], codegen["sampled"]) == (4, 2)  # fraction 0.5
    assert data["sources"]["alpaca"]["after_dedup"] == 304  # exempt from dedup in tiny.yaml
    assert data["dedup"]["threshold"] == 0.9
    assert data["dedup"]["dropped"] == 1 and data["sources"]["lima"]["after_dedup"] == 2  # dolly asked it first
    for row in data["sources"].values():
        assert row["tokenized"] == row["tokens"]["examples"] > 0
        assert row["sampled"] >= row["after_dedup"] >= row["tokenized"]
        assert row["tokens"]["max"] <= data["cutoff_len"] == 256
    assert data["total"]["examples"] == sum(row["tokenized"] for row in data["sources"].values())
    for name in TINY_SOURCES:
        assert (prepared / "data" / "histograms" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_prepare_prints_the_per_source_table(tmp_path, capsys, deduped):
    main(["prepare", "--config", deduped, "--trainer.default_root_dir", str(tmp_path),
          "--output_dir", str(tmp_path / "elsewhere")])
    out = capsys.readouterr().out
    assert "records per step" in out and "tokens per example (cutoff_len 256)" in out
    assert all(name in out for name in TINY_SOURCES)
    assert "dedup: 1 near-duplicates dropped (cosine > 0.9, all-MiniLM-L6-v2)" in out
    assert (tmp_path / "elsewhere" / "manifest.json").is_file()


def test_tiny_config_as_shipped(tmp_path):
    main(["prepare", "--config", TINY, "--trainer.default_root_dir", str(tmp_path)])
    data = manifest(tmp_path)
    assert list(data["sources"]) == TINY_SOURCES and data["dedup"] is None
    assert all(row["after_dedup"] == row["sampled"] for row in data["sources"].values())
    assert data["total"]["examples"] == 304 + 5 + 6 + 3 + 4 + 3 + 2


def test_manifest_is_rewritten_only_when_the_config_changes(tmp_path):
    run = ["prepare", "--config", TINY, "--trainer.default_root_dir", str(tmp_path)]
    main(run)
    path = tmp_path / "data" / "manifest.json"
    before, stamp = manifest(tmp_path), path.stat().st_mtime_ns
    main(run)
    assert path.stat().st_mtime_ns == stamp and manifest(tmp_path) == before
    main([*run, "--data.cutoff_len", "128"])
    after = manifest(tmp_path)
    assert path.stat().st_mtime_ns != stamp
    assert after["config_hash"] != before["config_hash"] and after["cutoff_len"] == 128
    assert after["records_fingerprint"] == before["records_fingerprint"]  # the mixture itself was reused


def test_fit_reuses_the_prepared_set(prepared, deduped, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["nextai"])  # main() of the earlier tests left its own there
    cli = NextaiCLI(args=["--config", deduped, "--trainer.default_root_dir", str(prepared)], run=False)
    assert str(cli.datamodule.tokenized_path()) == manifest(prepared)["tokenized_path"]
    monkeypatch.setattr(Mixture, "build", lambda self: pytest.fail("fit rebuilt the mixture"))
    monkeypatch.setattr(Mixture, "load", lambda self: pytest.fail("fit re-read the records"))
    cli.datamodule.prepare_data()
    cli.datamodule.setup("fit")
    assert len(cli.datamodule.train_set) + len(cli.datamodule.val_set) == manifest(prepared)["total"]["examples"]


def test_unknown_source_in_the_config_is_one_line(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(Path(TINY).read_text().replace("- source: dolly", "- source: dollyy"))
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--config", str(config), "--trainer.default_root_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert err[-1].startswith("nextai: error: unknown data source 'dollyy'; known sources: alpaca, arb, codegen")


# ------------------------------------------------------------------------------------------------ Table 7
DOLLY, PLATYPUS, CODEGEN = ("dolly", None, None), ("platypus", None, None), ("codegen", 0.1, None)
LIMA = ("lima", None, None)
TABLE_7 = {  # version: (source, fraction, count) as the report's Table 7 writes them
    1: [PLATYPUS],
    2: [DOLLY, PLATYPUS, CODEGEN, ("faithdial", 0.2, None), ("multi_news", 0.1, None)],
    3: [DOLLY, PLATYPUS, CODEGEN, ("faithdial", 0.2, None), ("multi_news", 0.1, None)],
    4: [DOLLY, PLATYPUS, CODEGEN, ("faithdial", 0.4, None), ("multi_news", 0.2, None)],
    5: [DOLLY, PLATYPUS, CODEGEN, ("faithdial", 0.2, None), ("multi_news", 0.1, None), LIMA],
    6: [DOLLY, PLATYPUS, CODEGEN, LIMA],
    7: [DOLLY, PLATYPUS, CODEGEN, LIMA, ("flan_cot", None, 2000)],
}


def printed_config(version: int, capsys) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIGS / f"v{version}.yaml"), "--print_config"])
    assert exit_info.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("version", sorted(TABLE_7))
def test_configs_reproduce_table_7(version, capsys):
    config = printed_config(version, capsys)
    mixture = config["data"]["source"]
    assert mixture["class_path"] == "nextai.data.mixture.Mixture"
    components = [(c["source"], c["fraction"], c["count"]) for c in mixture["init_args"]["components"]]
    assert components == TABLE_7[version]
    assert all(c["location"] is None for c in mixture["init_args"]["components"])  # the real hub datasets
    assert mixture["init_args"]["dedup"]["threshold"] == 0.9
    assert config["trainer"]["max_epochs"] == (2 if version == 3 else 1)
    assert config["model"]["base_model"] == "meta-llama/Llama-2-70b-hf"


def test_versions_2_and_3_differ_only_in_epochs(capsys):
    two, three = printed_config(2, capsys), printed_config(3, capsys)
    for config in (two, three):
        config["trainer"].pop("default_root_dir")
        config["trainer"].pop("max_epochs")
    assert two == three


def test_prepare_a_single_file_source(tmp_path):
    main(["prepare", "--config", TINY, "--data.source", "bundled:alpaca_tiny.jsonl",
          "--trainer.default_root_dir", str(tmp_path)])
    data = manifest(tmp_path)
    assert list(data["sources"]) == ["alpaca_tiny"]
    row = data["sources"]["alpaca_tiny"]
    assert row["rows"] == row["after_dedup"] == row["tokenized"] == 304 and "dedup" not in data
    assert (tmp_path / "data" / "histograms" / "alpaca_tiny.png").is_file()


def test_platypus_filter_list_is_overridable_in_yaml(tmp_path):
    config = tmp_path / "unfiltered.yaml"
    config.write_text(Path(TINY).read_text().replace(
        "        - source: platypus\n          location: bundled:sources/platypus.jsonl\n",
        "        - source:\n"
        "            class_path: nextai.data.sources.OpenPlatypus\n"
        "            init_args:\n"
        "              location: bundled:sources/platypus.jsonl\n"
        "              llm_generated: [reclor]\n"))
    main(["prepare", "--config", str(config), "--trainer.default_root_dir", str(tmp_path)])
    platypus = manifest(tmp_path)["sources"]["platypus"]
    assert (platypus["rows"], platypus["filtered"], platypus["sampled"]) == (8, 1, 7)


def test_prepare_shows_examples_with_the_trained_tokens_and_names_each_format(tmp_path, capsys):
    run = tmp_path / "run"
    main(["prepare", "--config", TINY, "--trainer.default_root_dir", str(run), "--data.source",
          "bundled:chat/sharegpt.jsonl", "--data.chat_template", "llama-2-chat", "--data.val_size", "2",
          "--show", "2"])
    out = capsys.readouterr().out
    assert "prompt format: messages, chat template llama-2-chat (turns end with </s>)" in out
    assert out.count("trained") >= 2 and "example 1 (sharegpt)" in out
    assert manifest(run)["sources"]["sharegpt"]["format"] == "messages"
    main(["prepare", "--config", TINY, "--trainer.default_root_dir", str(tmp_path / "tiny")])
    assert {row["format"] for row in manifest(tmp_path / "tiny")["sources"].values()} == {"alpaca"}
