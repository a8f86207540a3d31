"""`nextai evaluate` and `nextai compare` on two briefly trained tiny runs, and the shared generation function, on
the real 4-bit + LoRA path (CPU)."""

import json
from pathlib import Path

import pytest

from nextai.main import main
from nextai.errors import NextaiError
from nextai.eval.generate import Decoding, GenerationCancelled, generate
from nextai.eval.winrate import mean_win_rates

pytestmark = pytest.mark.slow
TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
EVALUATE = ["evaluate", "--config", TINY, "--eval_data", "bundled", "--limit", "3"]
PROMPTS = ["Below is an instruction that describes a task.", "Give three tips for staying healthy",
           "What is the capital of France? The capital"]


def fit(run: Path, steps: int) -> Path:
    main(["fit", "--config", TINY, "--trainer.default_root_dir", str(run), "--trainer.max_steps", str(steps)])
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs of different lengths: the first evaluated from its adapter, the second from its checkpoint."""
    first = fit(tmp_path_factory.mktemp("run-a"), 4)
    second = fit(tmp_path_factory.mktemp("run-b"), 8)
    main([*EVALUATE, "--trainer.default_root_dir", str(first)])
    main([*EVALUATE, "--trainer.default_root_dir", str(second),
          "--ckpt_path", str(second / "checkpoints" / "last.ckpt")])
    return first, second


def results(run: Path) -> dict:
    return json.loads((run / "evaluation.json").read_text())


def test_evaluate_writes_the_four_task_tables(runs):
    first, second = runs
    markdown = (first / "evaluation.md").read_text()
    for heading in ("## MMLU", "## BBQ", "## TruthfulQA", "## CNN/DailyMail",
                    "| MMLU | BBQ | TruthfulQA | CNN/DailyMail ROUGE-2 |"):
        assert heading in markdown
    found = results(first)
    assert found["model"]["adapter"] == str(first / "adapter") and found["model"]["quantization"] == "4-bit"
    assert results(second)["model"]["checkpoint"] == str(second / "checkpoints" / "last.ckpt")
    assert found["settings"] == {"limit": 3, "seed": 0, "context_window": 2048}
    tasks = found["tasks"]
    assert list(tasks) == ["mmlu", "bbq", "truthfulqa", "cnndm"]
    assert list(tasks["mmlu"]["scenarios"]) == ["mmlu:subject=philosophy", "mmlu:subject=high_school_geography"]
    for task in tasks.values():
        for scenario in task["scenarios"].values():
            assert scenario["instances"] == len(scenario["predictions"]) == 3
            for name, value in scenario["metrics"].items():  # each metric is the mean of the predictions' own
                per_instance = [p[name] for p in scenario["predictions"] if name in p]
                if per_instance:
                    assert value == pytest.approx(sum(per_instance) / len(per_instance))
    philosophy = tasks["mmlu"]["scenarios"]["mmlu:subject=philosophy"]
    assert philosophy["example_prompt"].startswith(
        "The following are multiple choice questions (with answers) about philosophy.\n\nQuestion: ")
    assert philosophy["example_prompt"].endswith("\nAnswer:") and philosophy["in_context_examples"] == 5
    summaries = tasks["cnndm"]["scenarios"]["summarization_cnndm:temperature=0.3"]
    assert summaries["example_prompt"].startswith("###\nArticle: ")
    assert summaries["example_prompt"].endswith("Summarize the above article in 3 sentences.")
    assert all("###" not in p["completion"] for p in summaries["predictions"])
    assert tasks["mmlu"]["metrics"]["exact_match"] == pytest.approx(
        sum(s["metrics"]["exact_match"] for s in tasks["mmlu"]["scenarios"].values()) / 2)


def test_same_seed_same_predictions_and_earlier_tasks_kept(runs):
    first, _ = runs
    before = results(first)
    main([*EVALUATE, "--trainer.default_root_dir", str(first), "--tasks", "[mmlu, cnndm]"])
    after = results(first)
    assert list(after["tasks"]) == ["mmlu", "bbq", "truthfulqa", "cnndm"]
    for task in ("mmlu", "cnndm"):  # greedy and seeded sampling (temperature 0.3) both repeat exactly
        for name, scenario in after["tasks"][task]["scenarios"].items():
            assert [p["completion"] for p in scenario["predictions"]] == \
                [p["completion"] for p in before["tasks"][task]["scenarios"][name]["predictions"]]
    assert after["tasks"]["bbq"] == before["tasks"]["bbq"]


def test_compare_prints_table_8_with_win_rates(runs, tmp_path, capsys):
    first, second = runs
    capsys.readouterr()
    main(["compare", str(first), str(second), "--names", "short", "long", "--output", str(tmp_path / "t.csv")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| Model | MMLU | BBQ | TruthfulQA | CNN/DailyMail ROUGE-2 | Mean win rate |"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| short", "| long"]
    rows = [line.split(",") for line in (tmp_path / "t.csv").read_text().splitlines()[1:]]
    values = [[float(v) for v in row[1:5]] for row in rows]
    rates = [float(row[5]) for row in rows]
    assert rates == pytest.approx(mean_win_rates(values, [False] * 4), abs=1e-9)
    assert sum(rates) == pytest.approx(1.0)  # two runs share every column's wins


@pytest.mark.parametrize("extra, message", [
    (["--adapter", "x", "--ckpt_path", "y"], "give either --ckpt_path or --adapter, not both"),
    ([], "no adapter in the run directory"),
    (["--adapter", "base", "--tasks", "[mmlu, mmlux]"], "unknown task 'mmlux'; expected one of mmlu, bbq"),
    (["--adapter", "base", "--eval_data", "/nonexistent/eval"], "/nonexistent/eval/mmlu: not an MMLU directory"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        main([*EVALUATE, "--trainer.default_root_dir", str(tmp_path / "run"), *extra])
    error = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("INFO ")]
    assert exit_info.value.code == 2 and len(error) == 1 and error[0].startswith("nextai: error: ")
    assert message in error[0]
    assert not (tmp_path / "run" / "evaluation.json").exists()


def test_a_checkpoint_of_another_lora_rank_is_named(runs):
    """(The CLI takes the model settings from the checkpoint; a module built otherwise can still disagree.)"""
    from nextai.eval.model import attach_checkpoint
    from nextai.modules.loading import load_for_inference
    from nextai.modules.qlora import QLoRAModule
    from nextai.modules.quantization import Quantization

    _, second = runs
    module = QLoRAModule(lora_r=8, lora_targets="all")
    base = load_for_inference("tiny", None, Quantization(), "auto", "cpu")
    with pytest.raises(NextaiError, match=r"the model expects \(8, \d+\) \(another lora_r than 8\?\)"):
        attach_checkpoint(module, base, str(second / "checkpoints" / "last.ckpt"))


def test_a_run_trained_packed_is_evaluated_from_its_checkpoint_with_padded_attention(tmp_path, log_messages):
    """Packed training picks a varlen kernel (on CUDA `nextai_varlen`, which runs packed batches only); generation
    from the run's checkpoint must load the base for padded batches instead."""
    packed = ["--data.packing", "true", "--data.pack_length", "512", "--data.micro_batch_size", "1"]
    messages = log_messages("nextai.modules.loading")
    main(["fit", "--config", TINY, "--trainer.default_root_dir", str(tmp_path), "--trainer.max_steps", "1",
          "--data.batch_size", "1", *packed])
    trained = list(messages)
    messages.clear()
    main([*EVALUATE, "--trainer.default_root_dir", str(tmp_path), *packed, "--limit", "1", "--tasks", "[mmlu]",
          "--mmlu_subjects", "[philosophy]", "--ckpt_path", str(tmp_path / "checkpoints" / "last.ckpt")])
    attention = [m for m in trained if m.startswith("attention: ")]
    assert len(attention) == 1 and "packed batches on cpu" in attention[0]
    assert [m for m in messages if m.startswith("attention: ")] == [
        "attention: sdpa (auto: no CUDA device, so torch's scaled_dot_product_attention)"]
    found = results(tmp_path)
    assert found["model"]["checkpoint"] == str(tmp_path / "checkpoints" / "last.ckpt")
    [scenario] = found["tasks"]["mmlu"]["scenarios"].values()
    assert scenario["instances"] == len(scenario["predictions"]) == 1


# ------------------------------------------------------------------------------------------- generation
@pytest.fixture(scope="module")
def model_and_tokenizer(runs):
    from nextai.data.tokenize import load_tokenizer
    from nextai.modules.loading import load_for_inference
    from nextai.modules.quantization import Quantization
    from nextai.base_model import resolve_base_model

    model = load_for_inference("tiny", runs[0] / "adapter", Quantization(), "auto", "cpu")
    return model, load_tokenizer(resolve_base_model("tiny"))


def test_batched_greedy_equals_one_prompt_at_a_time(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    decoding = Decoding(max_new_tokens=12, top_logprobs=3)
    batched = generate(model, tokenizer, PROMPTS, decoding, batch_size=3)
    for prompt, together in zip(PROMPTS, batched):
        [alone] = generate(model, tokenizer, [prompt], decoding, batch_size=1)
        assert together.text == alone.text
        assert [t.logprob for t in together.tokens] == pytest.approx([t.logprob for t in alone.tokens], abs=0.05)
        assert "".join(t.text for t in together.tokens) == together.text
        assert together.logprob == pytest.approx(sum(t.logprob for t in together.tokens))
        for token in together.tokens:  # greedy picks the most likely token: its log-prob tops the alternatives
            assert len(token.top_logprobs) <= 3 and token.logprob == pytest.approx(max(token.top_logprobs.values()))


def test_stop_sequence_is_cut_where_it_first_appears(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    [free] = generate(model, tokenizer, [PROMPTS[1]], Decoding(max_new_tokens=20))
    text = free.text
    cut = next(k for k in range(1, len(text) - 1) if text.find(text[k:k + 2]) == k)
    stop = text[cut:cut + 2]
    [stopped] = generate(model, tokenizer, [PROMPTS[1]], Decoding(max_new_tokens=20, stop=("@@@", stop)))
    assert stopped.text == text[:cut] and stopped.finish_reason == "stop"
    assert "".join(t.text for t in stopped.tokens) == stopped.text


def test_echo_returns_the_scored_prompt_first(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    [echoed] = generate(model, tokenizer, [PROMPTS[2]], Decoding(max_new_tokens=4, echo_prompt=True))
    [plain] = generate(model, tokenizer, [PROMPTS[2]], Decoding(max_new_tokens=4))
    assert echoed.text == PROMPTS[2] + plain.text
    assert echoed.prompt_tokens == len(echoed.tokens) - len(plain.tokens)
    assert echoed.tokens[0].logprob == 0.0 and all(t.logprob < 0 for t in echoed.tokens[1:echoed.prompt_tokens])


def test_seeded_sampling_repeats_and_seeds_differ(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer

    def sample(seed):
        return [c.text for c in generate(model, tokenizer, PROMPTS, Decoding(
            max_new_tokens=15, temperature=1.0, top_k=200, seed=seed))]

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)


def test_cancelled_and_overlong_requests(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    with pytest.raises(GenerationCancelled):
        generate(model, tokenizer, PROMPTS[:1], Decoding(max_new_tokens=5), cancelled=lambda: True)
    with pytest.raises(NextaiError, match="exceeds the model's 2048 positions"):
        generate(model, tokenizer, ["word " * 2100], Decoding(max_new_tokens=1))


def test_token_texts_hold_back_incomplete_characters(tiny_tokenizer):
    from nextai.eval.generate import Detokenizer, decode

    ids = tiny_tokenizer("clef 𝄞 sign", add_special_tokens=False)["input_ids"]  # 𝄞: four byte-fallback tokens
    detokenizer = Detokenizer(tiny_tokenizer, [tiny_tokenizer.bos_token_id])
    pieces = [detokenizer.push(i) for i in ids]
    assert "".join(pieces) == decode(tiny_tokenizer, ids) == "clef 𝄞 sign"
    assert "𝄞" in pieces and "" in pieces  # the character comes out whole, with its last byte
    complete = pieces.index("𝄞")
    cut = Detokenizer(tiny_tokenizer, [tiny_tokenizer.bos_token_id])
    held = "".join(cut.push(i) for i in ids[:complete]) + cut.flush()  # the token limit cut the character
    assert held == decode(tiny_tokenizer, ids[:complete]) and held.startswith("clef ") and "\ufffd" in held


def test_prompt_format_raw_or_in_the_run_format(tiny_run, tmp_path, capsys):
    """HELM's raw prompts by default for an Alpaca run (what the challenge measured); `trained` wraps each in the
    run's Alpaca prompt, and the results say which was used (so they are never merged with the other's)."""
    import shutil

    run = shutil.copytree(tiny_run, tmp_path / "run")
    command = ["evaluate", "--config", TINY, "--eval_data", "bundled", "--limit", "1", "--tasks", "[mmlu]",
               "--trainer.default_root_dir", str(run), "--mmlu_subjects", "[philosophy]"]
    main(command)
    raw = results(run)
    assert raw["model"]["prompts"] == "raw"
    main([*command, "--prompt_format", "trained"])
    templated = results(run)
    assert templated["model"]["prompts"] == "alpaca"
    assert list(templated["tasks"]) == ["mmlu"]  # other settings: earlier results replaced, not mixed in
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--prompt_format", "chatty"])
    assert exit_info.value.code == 2
    assert "evaluate: --prompt_format must be one of auto, raw, trained" in capsys.readouterr().err
