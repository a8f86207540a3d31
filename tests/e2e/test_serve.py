"""`nextai serve`: the challenge's HTTP API on loopback, called through a real HTTP client (urllib), with the
tiny 4-bit model; valid and invalid requests, a full queue and a timeout."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from after_training import RunningServer

from nextai.eval.generate import Decoding, generate

pytestmark = pytest.mark.slow
TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
PROMPT = "Give three tips for staying healthy."
# Exactly what HELM's HTTP client sends for a CNN/DM request (helm/proxy/clients/http_model_client.py).
HELM_BODY = {"prompt": PROMPT, "temperature": 1e-7, "num_return_sequences": 1, "max_new_tokens": 16, "top_p": 1,
             "echo_prompt": False, "top_k_per_token": 1, "stop_sequences": ["###"]}


def post(url: str, body, raw: bytes | None = None, timeout: float = 60) -> tuple[int, dict]:
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture(scope="module")
def model_and_tokenizer():
    from nextai.data.tokenize import load_tokenizer
    from nextai.modules.loading import load_for_inference
    from nextai.modules.quantization import Quantization
    from nextai.base_model import resolve_base_model

    return load_for_inference("tiny", None, Quantization(), "auto", "cpu"), load_tokenizer(resolve_base_model("tiny"))


@pytest.fixture(scope="module")
def server(model_and_tokenizer):
    from nextai.serve.app import ServeLimits, create_app

    running = RunningServer(create_app(*model_and_tokenizer, ServeLimits(max_new_tokens=64, max_request_bytes=4096)))
    yield running
    running.stop()


def test_process_answers_helm_with_the_fields_it_reads(server, model_and_tokenizer):
    status, body = post(f"{server.url}/process", HELM_BODY)
    assert status == 200
    assert set(body) == {"text", "tokens", "logprob", "request_time"} and body["request_time"] >= 0
    assert all(set(t) == {"text", "logprob", "top_logprob"} and len(t["top_logprob"]) == 1 for t in body["tokens"])
    assert "".join(t["text"] for t in body["tokens"]) == body["text"] and "###" not in body["text"]
    assert body["logprob"] == pytest.approx(sum(t["logprob"] for t in body["tokens"]))
    # The server runs the same generation as evaluate: greedy (HELM's 1e-7) gives the same text.
    [direct] = generate(*model_and_tokenizer, [PROMPT], Decoding(max_new_tokens=16, stop=("###",)))
    assert body["text"] == direct.text


def test_process_with_the_challenge_sample_fields(server):
    sample = {"prompt": "The capital of France is ", "num_samples": 1, "max_new_tokens": 8, "top_k": 200,
              "temperature": 0.8, "seed": 7, "echo_prompt": None, "an_unknown_field": "ignored"}
    first, second = post(f"{server.url}/process", sample), post(f"{server.url}/process", sample)
    assert first[0] == 200 and first[1]["text"] == second[1]["text"]  # seeded sampling repeats
    echoed = post(f"{server.url}/process", {**sample, "echo_prompt": True})[1]
    assert echoed["text"].startswith("The capital of France is")
    assert len(echoed["tokens"]) > len(first[1]["tokens"])


def test_tokenize_and_decode(server):
    status, body = post(f"{server.url}/tokenize", {"text": PROMPT})
    assert status == 200 and body["tokens"][0] == 1  # BOS first, as the model reads it
    assert post(f"{server.url}/tokenize", {"text": PROMPT, "truncation": True, "max_length": 3})[1]["tokens"] == \
        body["tokens"][:3]
    assert post(f"{server.url}/tokenize", {"text": PROMPT, "truncation": False, "max_length": 3})[1]["tokens"] == \
        body["tokens"]
    status, decoded = post(f"{server.url}/decode", {"tokens": body["tokens"]})
    assert status == 200 and decoded["text"] == PROMPT  # round trip, BOS dropped


@pytest.mark.parametrize("path, body, status, message", [
    ("/process", {"max_new_tokens": 5}, 422, "prompt"),
    ("/process", {"prompt": "x", "max_new_tokens": "many"}, 422, "max_new_tokens"),
    ("/process", {"prompt": "x", "max_new_tokens": -1}, 422, "max_new_tokens"),
    ("/process", {"prompt": "x", "num_samples": 2}, 422, "num_samples"),
    ("/process", {"prompt": "x", "max_new_tokens": 65}, 422, "over this server's limit of 64"),
    ("/process", {"prompt": "x", "top_p": 0}, 422, "top_p"),
    ("/process", {"prompt": "x", "max_new_tokens": 0}, 422, "asks for nothing"),
    ("/process", {"prompt": "word " * 900, "max_new_tokens": 64}, 413, "request body over 4096 bytes"),
    ("/process", {"prompt": "~" * 2100, "max_new_tokens": 1}, 422, "exceeds the model's 2048 positions"),
    ("/tokenize", {"text": 5}, 422, "text"),
    ("/tokenize", {"text": "a", "max_length": 0}, 422, "max_length"),
    ("/decode", {"tokens": [1, 99999]}, 422, "token id 99999 is outside the vocabulary"),
    ("/decode", {"tokens": "1 2"}, 422, "tokens"),
])
def test_invalid_requests_get_a_4xx_with_a_message(server, path, body, status, message):
    got, answer = post(f"{server.url}{path}", body)
    assert got == status
    assert message in json.dumps(answer["detail"])


def test_malformed_json_and_unknown_paths(server):
    assert post(f"{server.url}/process", None, raw=b'{"prompt": "x",')[0] == 422
    assert post(f"{server.url}/process", None, raw=b"[1, 2]")[0] == 422
    # Python's JSON parser reads Infinity: rejected as a value, and never echoed back (that was a 500)
    assert post(f"{server.url}/process", None, raw=b'{"prompt": Infinity}')[0] == 422
    assert post(f"{server.url}/process", None, raw=b'{"prompt": "x", "temperature": Infinity}')[0] == 422
    assert post(f"{server.url}/generate", {"prompt": "x"})[0] == 404
    assert post(f"{server.url}/process", {"prompt": PROMPT, "max_new_tokens": 2})[0] == 200  # still serving


def test_full_queue_is_503_and_slow_requests_504(model_and_tokenizer):
    from nextai.serve.app import ServeLimits, create_app

    app = create_app(*model_and_tokenizer, ServeLimits(max_new_tokens=2000, queue_size=1, timeout=1.0))
    running = RunningServer(app)
    try:
        slow = {"prompt": PROMPT, "max_new_tokens": 1900, "temperature": 0}
        answers = []
        first = threading.Thread(target=lambda: answers.append(post(f"{running.url}/process", slow)))
        first.start()
        deadline = time.monotonic() + 30
        while app.state.worker.outstanding < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        status, body = post(f"{running.url}/process", {"prompt": "x", "max_new_tokens": 1})
        assert status == 503 and "server busy" in body["detail"]
        first.join(timeout=60)
        assert answers[0][0] == 504 and "timeout of 1 s" in answers[0][1]["detail"]
        while app.state.worker.outstanding:  # the cancelled generation stops at its next token
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert post(f"{running.url}/process", {"prompt": "x", "max_new_tokens": 1})[0] == 200
    finally:
        running.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nextai_serve_command_on_loopback(tmp_path, nextai_cache):
    port = free_port()
    env = {**os.environ, "NEXTAI_CACHE_DIR": str(nextai_cache)}
    process = subprocess.Popen(
        [sys.executable, "-m", "nextai", "serve", "--config", TINY, "--adapter", "base", "--port", str(port),
         "--trainer.default_root_dir", str(tmp_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "nextai serve did not start"
            try:
                status, body = post(f"http://127.0.0.1:{port}/tokenize", {"text": "hello"}, timeout=5)
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        assert status == 200 and body["tokens"][0] == 1
        status, body = post(f"http://127.0.0.1:{port}/process", {**HELM_BODY, "max_new_tokens": 4})
        assert status == 200 and len(body["tokens"]) <= 4
    finally:
        process.terminate()
        process.wait(timeout=30)


def _small_generation(body: dict) -> dict:
    tokens = body.get("max_new_tokens")
    if isinstance(tokens, int) and not isinstance(tokens, bool):
        return {**body, "max_new_tokens": tokens % 3}
    return body


def _fuzz_bodies():
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=12)
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(max_size=6), inner, max_size=3), max_leaves=6)
    fields = st.sampled_from(["prompt", "max_new_tokens", "temperature", "top_p", "num_samples", "echo_prompt",
                              "top_k_per_token", "stop_sequences", "seed", "text", "truncation", "max_length",
                              "tokens", "num_return_sequences"])
    # Small generations only, so the fuzzing costs seconds: a valid request asks for at most 2 new tokens.
    bodies = st.dictionaries(fields, values, max_size=5).map(_small_generation)
    return st.tuples(st.sampled_from(["/process", "/tokenize", "/decode"]), bodies | values)


def test_no_request_crashes_the_server(server):
    """Arbitrary JSON bodies: every answer is a 200 or a 4xx with a message, never a 5xx, and serving goes on."""
    from hypothesis import HealthCheck, given, settings

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_fuzz_bodies())
    def fuzz(case):
        path, body = case
        status, answer = post(f"{server.url}{path}", body)
        assert status == 200 or (400 <= status < 500 and answer.get("detail")), (status, answer)

    fuzz()
    assert post(f"{server.url}/process", {"prompt": PROMPT, "max_new_tokens": 2})[0] == 200


def test_helms_own_http_client_and_tokenizer(server, model_and_tokenizer):
    """HELM's client for `neurips/local` (crfm-helm's HTTPModelClient / HTTPModelTokenizer, the code the
    challenge's evaluators ran) against the served model: a greedy request reads the same text `generate` gives,
    and its tokenizer round-trips through /tokenize and /decode."""
    pytest.importorskip("helm.clients.http_model_client", reason="crfm-helm (installed --no-deps by .ci/run)")
    from helm.clients.http_model_client import HTTPModelClient
    from helm.common.cache import BlackHoleCacheConfig
    from helm.common.request import Request
    from helm.common.tokenization_request import DecodeRequest, TokenizationRequest
    from helm.tokenizers.http_model_tokenizer import HTTPModelTokenizer

    client = HTTPModelClient(BlackHoleCacheConfig(), base_url=server.url, timeout=60)
    result = client.make_request(Request(model="neurips/local", model_deployment="neurips/local", prompt=PROMPT,
                                         temperature=0.0, max_tokens=16, stop_sequences=["###"]))
    assert result.success, result.error
    [completion] = result.completions
    [direct] = generate(*model_and_tokenizer, [PROMPT], Decoding(max_new_tokens=16, stop=("###",)))
    assert completion.text == direct.text and completion.text
    assert completion.logprob == pytest.approx(sum(token.logprob for token in completion.tokens))

    tokenizer = HTTPModelTokenizer(BlackHoleCacheConfig(), base_url=server.url)
    tokens = tokenizer.tokenize(TokenizationRequest(text=PROMPT, tokenizer="neurips/local", encode=True)).tokens
    ids = [token.value for token in tokens]
    assert ids == model_and_tokenizer[1](PROMPT)["input_ids"]
    assert tokenizer.decode(DecodeRequest(tokens=ids, tokenizer="neurips/local")).text == PROMPT
