"""`nextai serve`'s OpenAI-compatible routes, called with the real `openai` client against uvicorn on loopback, with
the tiny 4-bit model + a trained adapter: answers equal nextai's own generation in the run's prompt format,
streamed or not; the end-of-turn token and stop sequences end replies on every route; limits, queue, timeout and
the API key."""

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace

import pytest
import torch

from nextai.data.chat import resolve_chat_template
from nextai.data.prompt import PromptFormat
from nextai.errors import NextaiError
from nextai.eval.generate import Decoding, generate
from nextai.eval.prompting import InferencePrompt

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow

MESSAGES = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name three colors."}]
NAME = "tiny-run"


def chat_prompt(tokenizer, end_of_turn: str | None = None) -> InferencePrompt:
    """LLaMA-2-chat's template on the tiny tokenizer; `end_of_turn` makes another token end a turn."""
    template = resolve_chat_template(tokenizer, "llama-2-chat")
    if end_of_turn is not None:
        template = replace(template, end_of_turn=end_of_turn)
    return InferencePrompt(PromptFormat(("messages",), template), tokenizer, "test")


def client(server, key: str = "none") -> "openai.OpenAI":
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=60)


def direct(model, tokenizer, ids, **settings):
    [completion] = generate(model, tokenizer, [ids], Decoding(**settings), batch_size=1)
    return completion


@torch.inference_mode()
def greedy_ids(model, ids: list[int], count: int) -> list[int]:
    out = []
    for _ in range(count):
        logits = model(input_ids=torch.tensor([ids + out])).logits[0, -1]
        out.append(int(logits.argmax()))
    return out


@pytest.fixture(scope="module")
def served(tiny_model):
    from after_training import RunningServer

    from nextai.serve.app import ServeLimits, create_app

    model, tokenizer, _ = tiny_model
    prompt = chat_prompt(tokenizer)
    server = RunningServer(create_app(model, tokenizer, ServeLimits(max_new_tokens=64, max_request_bytes=8192),
                                      prompt, model_name=NAME))
    yield server, model, tokenizer, prompt
    server.stop()


def test_chat_completion_is_nextai_generation_in_the_run_format(served):
    server, model, tokenizer, prompt = served
    answer = client(server).chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=12, temperature=0)
    ids = prompt.ids(MESSAGES)
    # the template writes BOS itself: once, not doubled by the tokenizer; then LLaMA-2-chat's system block
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(ids).startswith("<s>[INST] <<SYS>>\nAnswer briefly.\n<</SYS>>")
    expected = direct(model, tokenizer, ids, max_new_tokens=12, stop_token_ids=prompt.stop_token_ids())
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == expected.text
    assert choice.finish_reason == ("length" if expected.finish_reason == "length" else "stop")
    assert answer.usage.prompt_tokens == len(ids) and answer.usage.completion_tokens == expected.generated
    assert answer.usage.total_tokens == len(ids) + expected.generated and answer.model == NAME


def test_streamed_chat_joins_to_the_whole_answer_and_ends_with_usage(served):
    server, *_ = served
    whole = client(server).chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=16, temperature=0)
    chunks = list(client(server).chat.completions.create(
        model=NAME, messages=MESSAGES, max_tokens=16, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].object == "chat.completion.chunk" and chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content and len([c for c in chunks if c.choices]) > 3
    finished = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finished == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


def test_completions_write_the_prompt_in_the_run_format_unless_raw(served):
    server, model, tokenizer, prompt = served
    text = "Give three tips for staying healthy."
    templated = client(server).completions.create(model=NAME, prompt=text, max_tokens=10, temperature=0)
    expected = direct(model, tokenizer, prompt.text_ids(text), max_new_tokens=10,
                      stop_token_ids=prompt.stop_token_ids())
    assert templated.choices[0].text == expected.text and templated.object == "text_completion"
    raw = client(server).completions.create(model=NAME, prompt=text, max_tokens=10, temperature=0,
                                            extra_body={"raw_prompt": True})
    challenge = post(f"{server.url}/process", {"prompt": text, "max_new_tokens": 10, "temperature": 0})[1]
    assert raw.choices[0].text == challenge["text"] != templated.choices[0].text  # /process: raw, as HELM sends
    streamed = client(server).completions.create(model=NAME, prompt=text, max_tokens=10, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == templated.choices[0].text


def test_stop_sequences_cut_replies_the_same_streamed_or_not(served):
    server, *_ = served
    full = client(server).chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=24,
                                                  temperature=0).choices[0].message.content
    assert len(full) > 6
    stop = full[3:6]  # text from the middle of the reply
    cut = full[:full.index(stop)]
    answer = client(server).chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=24, temperature=0,
                                                    stop=[stop, "never appears"])
    assert answer.choices[0].message.content == cut and answer.choices[0].finish_reason == "stop"
    chunks = client(server).chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=24, temperature=0,
                                                    stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == cut


def test_the_end_of_turn_token_ends_replies_on_every_route(tiny_model, running_server):
    """A template whose end-of-turn token is the model's third greedy token: every route stops before it."""
    from nextai.serve.app import ServeLimits, create_app

    model, tokenizer, _ = tiny_model
    plain = chat_prompt(tokenizer)
    third = greedy_ids(model, plain.ids(MESSAGES), 3)[2]
    assert third != tokenizer.eos_token_id
    prompt = chat_prompt(tokenizer, end_of_turn=tokenizer.convert_ids_to_tokens(third))
    assert prompt.stop_token_ids() == (third,)
    server = running_server(create_app(model, tokenizer, ServeLimits(max_new_tokens=64), prompt, model_name=NAME))
    unstopped = direct(model, tokenizer, plain.ids(MESSAGES), max_new_tokens=12)
    stopped = direct(model, tokenizer, plain.ids(MESSAGES), max_new_tokens=12, stop_token_ids=(third,))
    assert stopped.finish_reason == "eos" and stopped.generated <= 3 and unstopped.text.startswith(stopped.text)
    assert stopped.text != unstopped.text
    answer = client(server).chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=12, temperature=0)
    assert answer.choices[0].message.content == stopped.text and answer.choices[0].finish_reason == "stop"
    streamed = client(server).chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=12, temperature=0,
                                                      stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == stopped.text
    # /process reads HELM's raw prompt, and stops at the end-of-turn token too
    raw_text = tokenizer.decode(plain.ids(MESSAGES), skip_special_tokens=False).removeprefix("<s>").lstrip()
    body = post(f"{server.url}/process", {"prompt": raw_text, "max_new_tokens": 12, "temperature": 0})[1]
    assert body["text"] == direct(model, tokenizer, raw_text, max_new_tokens=12, stop_token_ids=(third,)).text


def test_models_health_and_logprobs(served):
    server, *_ = served
    assert [m.id for m in client(server).models.list()] == [NAME]
    assert json.loads(urllib.request.urlopen(f"{server.url}/health").read())["status"] == "ok"
    answer = client(server).chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=4, temperature=0,
                                                    logprobs=True, top_logprobs=2)
    content = answer.choices[0].logprobs.content
    assert "".join(t.token for t in content) == answer.choices[0].message.content
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 and t.top_logprobs[0].logprob >= t.logprob
               for t in content)


@pytest.mark.parametrize("request_args, error, message", [
    ({"model": "gpt-4"}, "NotFoundError", "does not exist"),
    ({"max_tokens": 65}, "BadRequestError", "over this server's limit of 64"),
    ({"n": 2}, "BadRequestError", "n"),
    ({"temperature": 3}, "BadRequestError", "temperature"),
    ({"presence_penalty": 1.0}, "BadRequestError", "not supported"),
    ({"messages": [{"role": "user", "content": "word " * 2000}]}, "APIStatusError", "request body over 8192 bytes"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, "BadRequestError",
     "alternate"),
])
def test_invalid_chat_requests_get_openai_errors(served, request_args, error, message):
    server, *_ = served
    arguments = {"model": NAME, "messages": MESSAGES, "max_tokens": 4, **request_args}
    with pytest.raises(getattr(openai, error)) as raised:
        client(server).chat.completions.create(**arguments)
    assert message in str(raised.value)


def post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_an_api_key_guards_every_route_but_health(tiny_model, running_server):
    from nextai.serve.app import ServeLimits, create_app

    model, tokenizer, prompt = tiny_model
    server = running_server(create_app(model, tokenizer, ServeLimits(max_new_tokens=8), prompt, api_key="sekret",
                                       model_name=NAME))
    with pytest.raises(openai.AuthenticationError):
        client(server, "wrong").models.list()
    assert client(server, "sekret").chat.completions.create(
        model=NAME, messages=MESSAGES[1:], max_tokens=2).choices[0].finish_reason in ("stop", "length")
    assert post(f"{server.url}/process", {"prompt": "x", "max_new_tokens": 1})[0] == 401  # HELM sends no key
    assert post(f"{server.url}/process", {"prompt": "x", "max_new_tokens": 1},
                {"Authorization": "Bearer sekret"})[0] == 200
    assert urllib.request.urlopen(f"{server.url}/health").status == 200


def test_listening_beyond_loopback_needs_a_key_or_a_decision():
    from nextai.serve.guards import check_exposure

    check_exposure("127.0.0.1", None, False)
    check_exposure("0.0.0.0", "sekret", False)
    check_exposure("0.0.0.0", None, True)  # the challenge's container
    with pytest.raises(NextaiError, match="--api_key"):
        check_exposure("0.0.0.0", None, False)


def test_a_full_queue_is_503_and_a_stream_past_its_timeout_ends_with_an_error(tiny_model, running_server):
    """The random-weight base alone (no adapter that learned to end replies) keeps one long stream busy."""
    from nextai.modules.loading import load_for_inference
    from nextai.modules.quantization import Quantization
    from nextai.serve.app import ServeLimits, create_app

    _, tokenizer, prompt = tiny_model
    model = load_for_inference("tiny", None, Quantization(), "sdpa", "cpu")
    app = create_app(model, tokenizer, ServeLimits(max_new_tokens=2000, queue_size=1, timeout=8.0), prompt,
                     model_name=NAME)
    server = running_server(app)
    outcome = {}

    def long_stream():
        try:
            for _ in client(server).chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=1900,
                                                            temperature=0, stream=True):
                pass
        except openai.APIError as err:
            outcome["error"] = str(err)

    first = threading.Thread(target=long_stream)
    first.start()
    deadline = time.monotonic() + 30
    while app.state.worker.outstanding < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(openai.APIStatusError) as busy:
        client(server).chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=2, stream=True)
    assert busy.value.status_code == 503 and "server busy" in str(busy.value)
    first.join(timeout=60)
    assert "timeout of 8 s" in outcome.get("error", "")
    while app.state.worker.outstanding:  # the abandoned generation stops at its next token
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert client(server).chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=1).choices


def test_nextai_serve_beyond_loopback_without_a_key_stops_before_loading(tmp_path, capsys, monkeypatch):
    from after_training import TINY_CONFIG

    from nextai.main import main

    monkeypatch.delenv("NEXTAI_API_KEY", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--config", TINY_CONFIG, "--adapter", "base", "--host", "0.0.0.0",
              "--trainer.default_root_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "nextai: error: serve: --host 0.0.0.0 is reachable from other machines: set --api_key KEY" in \
        capsys.readouterr().err
