"""A random-weight LLaMA checkpoint already quantized to NF4, built layer by layer on the GPU.

The bf16 model is never held whole: each decoder layer is created on the device, its linears quantized by
bitsandbytes (NF4, double quantization, like `Quantization()`), and its packed state moved to the CPU for the
safetensors shards. The result loads with `from_pretrained` (its config carries the quantization), so the
benchmark and `nextai fit` use the real loading path. 70B: about 34 GiB on disk.
"""

import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch

from nextai.bench.shapes import SHAPES, VOCAB, llama_config
from nextai.errors import NextaiError

log = logging.getLogger(__name__)

MARKER = "BUILD_OK.json"
SHARD_BYTES = 4 * 2**30


def build_marker(shape: str) -> dict:
    """What a finished build records; also what ../shared/peers/unsloth_vs_plain.py checks before reusing it."""
    return {"shape": shape, "vocab": VOCAB, "max_position_embeddings": 4096, **SHAPES[shape]}


def finished_build(directory: Path, shape: str) -> bool:
    try:
        return json.loads((directory / MARKER).read_text()) == build_marker(shape)
    except (OSError, ValueError):
        return False


def _quantized(linear: torch.nn.Linear, device: torch.device):
    import bitsandbytes as bnb

    layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=False, compute_dtype=torch.bfloat16,
                              compress_statistics=True, quant_type="nf4", quant_storage=torch.uint8, device="meta")
    layer.weight = bnb.nn.Params4bit(linear.weight.data.to(torch.bfloat16), requires_grad=False, quant_type="nf4",
                                     compress_statistics=True, quant_storage=torch.uint8, module=layer).to(device)
    return layer


def build_random_nf4(shape: str, directory: str | Path, device: str = "cuda", seed: int = 0) -> Path:
    """Write the checkpoint into `directory` (reused when a finished build of the same shape is there)."""
    from transformers import LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer
    from safetensors.torch import save_file

    from nextai.data.prompt import PROMPT_NO_INPUT, PROMPT_WITH_INPUT
    from nextai.tiny import build_tokenizer

    directory = Path(directory)
    if finished_build(directory, shape):
        log.info("random %s NF4 checkpoint: reusing %s", shape, directory)
        return directory
    if not torch.cuda.is_available() and device == "cuda":
        raise NextaiError("building a random NF4 model needs a CUDA GPU (bitsandbytes quantizes on the device)")
    start = time.time()
    torch.manual_seed(seed)
    config = llama_config(shape)
    device = torch.device(device)
    shell = LlamaForCausalLM(llama_config(shape).__class__(**{**config.to_dict(), "num_hidden_layers": 0}))
    shell = shell.to(device=device, dtype=torch.bfloat16)
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    index: dict[str, str] = {}
    shard: dict[str, torch.Tensor] = {}
    shard_bytes = 0

    def flush() -> None:
        nonlocal shard, shard_bytes
        if shard:
            name = f"model-{len(set(index.values())) + 1:05d}.safetensors"
            save_file({k: v.contiguous() for k, v in shard.items()}, str(partial / name), metadata={"format": "pt"})
            index.update(dict.fromkeys(shard, name))
            shard, shard_bytes = {}, 0

    def add(prefix: str, state: dict) -> None:
        nonlocal shard_bytes
        for key, value in state.items():
            shard[prefix + key] = value.detach().cpu()
            shard_bytes += value.numel() * value.element_size()
        if shard_bytes > SHARD_BYTES:
            flush()

    add("", shell.state_dict())
    for i in range(config.num_hidden_layers):
        with torch.device(device):
            layer = LlamaDecoderLayer(config, i).to(torch.bfloat16)
        for parent in (layer.self_attn, layer.mlp):
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Linear):
                    setattr(parent, name, _quantized(child, device))
        add(f"model.layers.{i}.", layer.state_dict())
        del layer
    flush()
    (partial / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": index}))
    saved = config.to_dict()
    saved.update(architectures=["LlamaForCausalLM"], torch_dtype="bfloat16", quantization_config={
        "quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False, "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True, "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_quant_storage": "uint8",
        "llm_int8_threshold": 6.0, "llm_int8_skip_modules": None, "llm_int8_enable_fp32_cpu_offload": False,
        "llm_int8_has_fp16_weight": False})
    (partial / "config.json").write_text(json.dumps(saved, indent=1))
    texts = [PROMPT_WITH_INPUT, PROMPT_NO_INPUT] * 50 + [f"token {i} and word {i * 7 % 1000}" for i in range(3000)]
    build_tokenizer(texts, vocab_size=VOCAB, model_max_length=4096).save_pretrained(partial)
    (partial / MARKER).write_text(json.dumps(build_marker(shape)))
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(partial, directory)
    size = sum(f.stat().st_size for f in directory.iterdir()) / 2**30
    log.info("random %s NF4 checkpoint: %d tensors, %.2f GiB, %.0fs -> %s", shape, len(index), size,
             time.time() - start, directory)
    return directory
