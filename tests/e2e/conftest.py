"""Shared fixtures of the after-training tests: a briefly trained tiny run, a uvicorn server on a free loopback port,
the tiny 4-bit model."""

from pathlib import Path

import pytest
from after_training import TINY_CONFIG, RunningServer


@pytest.fixture
def running_server():
    """`running_server(app)` -> a RunningServer, stopped after the test."""
    started: list[RunningServer] = []

    def start(app) -> RunningServer:
        started.append(RunningServer(app))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, nextai_cache) -> Path:
    """The tiny model fine-tuned for 6 steps on configs/tiny.yaml (Alpaca prompts): adapter, checkpoint, run files."""
    from nextai.main import main

    run = tmp_path_factory.mktemp("tiny-run")
    main(["fit", "--config", TINY_CONFIG, "--trainer.default_root_dir", str(run), "--trainer.max_steps", "6"])
    return run


@pytest.fixture(scope="session")
def tiny_model(tiny_run):
    """The tiny 4-bit base with the run's adapter, its tokenizer and its prompt format, as `serve` and `chat` load
    them."""
    from nextai.base_model import resolve_base_model
    from nextai.data.tokenize import load_tokenizer
    from nextai.eval.prompting import find_prompt_format
    from nextai.modules.loading import load_for_inference
    from nextai.modules.quantization import Quantization

    model = load_for_inference("tiny", tiny_run / "adapter", Quantization(), "sdpa", "cpu")
    tokenizer = load_tokenizer(resolve_base_model("tiny"))
    return model, tokenizer, find_prompt_format(tokenizer, str(tiny_run / "adapter"), None, tiny_run, None)
