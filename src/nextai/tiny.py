"""The embedded default: a tiny random-weight LLaMA and a BPE tokenizer trained on the bundled samples.

`base_model: tiny` resolves to a directory built on first use in the cache and reused after. It is a
real `LlamaForCausalLM` checkpoint (bf16 safetensors), so it loads through `from_pretrained` and gets
quantized to 4-bit by bitsandbytes exactly like a hub model. Every dimension is a multiple of 64:
bitsandbytes' CPU 4-bit kernels need multiples of 32 on some CPUs.
"""

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from nextai.atomic import exclusive
from nextai.data.samples import SAMPLES_DIR
from nextai.paths import default_cache_dir

log = logging.getLogger(__name__)

TINY_NAME = "tiny"
BUILD_VERSION = "1"  # bump when the builder changes what it writes
VOCAB_SIZE = 1024
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
TINY_SHAPE = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=2048)


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


# The samples the tiny tokenizer learns from: the Alpaca samples and the sources' native samples. The chat samples
# added later are left out, so the tiny model (and every number measured on it) stays what it was.
CORPUS = ("alpaca_tiny.jsonl", "sources")


def corpus_files(directory: Path) -> list[Path]:
    return sorted(p for name in CORPUS for p in ([directory / name] if (directory / name).is_file()
                                                  else (directory / name).rglob("*")))


def sample_texts(directory: Path) -> list[str]:
    """Every string value of every record in the corpus's sample files (any schema), for tokenizer training."""
    texts = []
    for path in corpus_files(directory):
        if path.suffix == ".jsonl":
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    texts += _strings(json.loads(line))
        elif path.suffix == ".json":
            texts += _strings(json.loads(path.read_text(encoding="utf-8")))
    return texts


def _samples_hash(directory: Path) -> str:
    digest = hashlib.sha256(BUILD_VERSION.encode())
    digest.update(json.dumps(TINY_SHAPE, sort_keys=True).encode())
    for path in corpus_files(directory):
        if path.suffix in (".json", ".jsonl"):
            digest.update(path.relative_to(directory).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def build_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE, model_max_length: int | None = None):
    """A LLaMA-style tokenizer: BPE with byte fallback, `▁` word marker, BOS added, no pad token.

    ids: <unk>=0, <s>=1, </s>=2, <0x00>..<0xFF>=3..258, then learned merges, padded to `vocab_size`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from nextai.data.prompt import PROMPT_NO_INPUT, PROMPT_WITH_INPUT

    corpus = texts + [PROMPT_WITH_INPUT, PROMPT_NO_INPUT]
    learner = Tokenizer(models.BPE(unk_token="<unk>"))
    learner.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    learner.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=vocab_size - 256, special_tokens=list(SPECIAL_TOKENS), show_progress=False))
    learned = json.loads(learner.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for token, _ in sorted(learned["vocab"].items(), key=lambda item: item[1]):
        if len(vocab) < vocab_size:
            vocab.setdefault(token, len(vocab))
    merges = [(a, b) for a, b in merges if a in vocab and b in vocab and a + b in vocab]
    for filler in range(vocab_size - len(vocab)):
        vocab[f"<extra_{filler}>"] = len(vocab)

    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True,
                                   fuse_unk=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                         decoders.Fuse(), decoders.Strip(content=" ", left=1)])
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=model_max_length or TINY_SHAPE["max_position_embeddings"])


def build_tiny_model(directory: Path, seed: int = 0) -> None:
    """Write the tokenizer and a random-weight bf16 LLaMA checkpoint into `directory`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(sample_texts(SAMPLES_DIR))
    config = LlamaConfig(vocab_size=VOCAB_SIZE, rms_norm_eps=1e-5, tie_word_embeddings=False,
                         bos_token_id=1, eos_token_id=2, pad_token_id=None, **TINY_SHAPE)
    from transformers.utils import logging as transformers_logging

    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # a one-time build: no shard-writing bar in the user's output
    try:
        model.save_pretrained(directory)
    finally:
        if bars:
            transformers_logging.enable_progress_bar()
    tokenizer.save_pretrained(directory)


def ensure_tiny_model(cache_dir: Path | None = None) -> Path:
    """The tiny model's directory, built on first use (a few seconds) and reused while the samples are unchanged."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache_dir / f"tiny-llama-{_samples_hash(SAMPLES_DIR)}"
    if (target / "config.json").exists():
        return target
    with exclusive(cache_dir / ".tiny.lock"):
        if (target / "config.json").exists():
            return target
        log.info("building the tiny LLaMA and tokenizer in %s", target)
        work = Path(tempfile.mkdtemp(prefix=".tiny-", dir=cache_dir))
        try:
            build_tiny_model(work)
            os.replace(work, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target
