"""The shared generation function's after-training duties: streamed text that joins to exactly the returned text
(stop sequences held back until they cannot begin), stop tokens, echo scores for tokenizers that add no BOS
(SmolLM2's), and the KV cache passed by the name the installed transformers takes."""

import warnings

import pytest
import torch

from nextai.eval.generate import Decoding, generate, scoring_prefix

pytestmark = pytest.mark.slow
PROMPTS = ["Give three tips for staying healthy.", "What is the capital of France? The capital",
           "Below is an instruction that describes a task."]


@pytest.fixture(scope="module")
def tiny():
    from nextai.base_model import resolve_base_model
    from nextai.data.tokenize import load_tokenizer
    from nextai.modules.loading import load_for_inference
    from nextai.modules.quantization import Quantization

    return load_for_inference("tiny", None, Quantization(), "sdpa", "cpu"), load_tokenizer(resolve_base_model("tiny"))


def streamed(model, tokenizer, prompts, decoding) -> tuple[list, dict[int, list[str]]]:
    pieces: dict[int, list[str]] = {i: [] for i in range(len(prompts))}
    completions = generate(model, tokenizer, prompts, decoding, batch_size=len(prompts),  # one batch: one draw order
                           on_text=lambda index, piece: pieces[index].append(piece))
    return completions, pieces


def test_streamed_pieces_join_to_the_text_with_and_without_stop_sequences(tiny):
    model, tokenizer = tiny
    free, pieces = streamed(model, tokenizer, PROMPTS, Decoding(max_new_tokens=20, temperature=0.9, seed=3))
    for completion, parts in zip(free, pieces.values()):
        assert "".join(parts) == completion.text and len(parts) > 1
    # stop at text from the middle of each completion, of two to five characters: the stream never shows it
    stops = tuple(c.text[4:4 + 2 + i] for i, c in enumerate(free) if len(c.text) > 10)
    assert stops
    cut, pieces = streamed(model, tokenizer, PROMPTS, Decoding(max_new_tokens=20, temperature=0.9, seed=3, stop=stops))
    for completion, parts, original in zip(cut, pieces.values(), free):
        assert "".join(parts) == completion.text and not any(s in completion.text for s in stops)
        assert original.text.startswith(completion.text)
    assert any(c.finish_reason == "stop" for c in cut)


def test_a_stop_token_ends_the_completion_like_eos(tiny):
    model, tokenizer = tiny
    [free] = generate(model, tokenizer, [PROMPTS[0]], Decoding(max_new_tokens=6))
    ids = tokenizer(PROMPTS[0]).input_ids
    with torch.inference_mode():
        first = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
    [stopped] = generate(model, tokenizer, [ids], Decoding(max_new_tokens=6, stop_token_ids=(first,)))
    assert free.text and stopped.text == "" and stopped.finish_reason == "eos" and stopped.generated == 1


def test_generation_passes_the_cache_without_deprecation_warnings(tiny):
    model, tokenizer = tiny
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        generate(model, tokenizer, PROMPTS[:1], Decoding(max_new_tokens=3))
    assert not [w for w in caught if "past_key_values" in str(w.message)]


def test_echo_scores_every_prompt_token_when_the_tokenizer_adds_no_bos(smollm2_dir, smollm2_tokenizer, tiny):
    from nextai.modules.loading import load_for_inference
    from nextai.modules.quantization import Quantization

    tokenizer = smollm2_tokenizer
    model = load_for_inference(str(smollm2_dir), None, Quantization(), "sdpa", "cpu")
    text = "The capital of France is"
    ids = tokenizer(text).input_ids
    assert ids[0] != tokenizer.bos_token_id and scoring_prefix(tokenizer, ids) == tokenizer.bos_token_id
    [echoed] = generate(model, tokenizer, [text], Decoding(max_new_tokens=0, echo_prompt=True))
    assert len(echoed.tokens) == len(ids) and "".join(t.text for t in echoed.tokens) == text
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([[tokenizer.bos_token_id, *ids]])).logits[0].float()
    first = torch.log_softmax(logits[0], dim=-1)[ids[0]].item()
    assert echoed.tokens[0].logprob == pytest.approx(first, abs=1e-4) and first < 0  # scored, not left out
    # a tokenizer that adds BOS: BOS itself is no text and gets 0.0, as before
    tiny_model, tiny_tokenizer = tiny
    [bos_first] = generate(tiny_model, tiny_tokenizer, [text], Decoding(max_new_tokens=0, echo_prompt=True))
    assert bos_first.tokens[0].text == "" and bos_first.tokens[0].logprob == 0.0
    assert len(bos_first.tokens) == len(tiny_tokenizer(text).input_ids)
