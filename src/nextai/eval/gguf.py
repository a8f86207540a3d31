"""A merged LLaMA-architecture model as a GGUF file for llama.cpp, Ollama and LM Studio (Unsloth's
`save_pretrained_gguf`), written with the `gguf` package's `GGUFWriter` the way llama.cpp's `convert_hf_to_gguf.py`
writes LLaMA: its tensor names (`gguf.get_tensor_name_map`), q/k rows permuted to llama.cpp's RoPE layout, norms in
f32, the other weights in f16, bf16 or q8_0 (`gguf.quants.quantize`; a tensor whose rows q8_0 cannot block stays
f16, as llama.cpp does).

The tokenizer goes in as llama.cpp reads it: copied from the GGUF the base came from when it came from one (its
pre-tokenizer name included), else built by the `gguf` package's vocabulary readers from `tokenizer.json`. The chat
template is the run's prompt format (`nextai.eval.chat_templates`), so llama.cpp asks the model as it was trained.
"""

import json
import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from nextai.errors import NextaiError

log = logging.getLogger(__name__)

GGUFType = Literal["f16", "bf16", "q8_0"]
GGUF_TYPES = ("f16", "bf16", "q8_0")


def check_llama(config) -> None:
    """GGUF export writes LLaMA's layout only: refuse what it would write wrong."""
    if getattr(config, "model_type", None) != "llama":
        raise NextaiError(f"GGUF export supports the LLaMA architecture; this model is {config.model_type!r} "
                          f"(export --format merged and convert it with llama.cpp's convert_hf_to_gguf.py)")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") not in ("default", None):
        raise NextaiError(f"GGUF export writes plain RoPE; this model uses {rope.get('rope_type')!r} scaling")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise NextaiError("GGUF export writes LLaMA without biases; this model has attention or MLP biases")


def rope_theta(config) -> float:
    parameters = getattr(config, "rope_parameters", None) or {}
    return float(parameters.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0)


def permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """HF's rotate-half q/k rows -> llama.cpp's interleaved pairs (convert_hf_to_gguf.py's `LlamaModel.permute`)."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def tensor_data(name: str, tensor: torch.Tensor, config, kind: GGUFType):
    """(array, raw dtype or None) for one tensor: norms f32; q/k permuted; 2-D weights in `kind`."""
    import gguf

    array = tensor.detach().to(torch.float32).cpu().numpy()
    if name.endswith("q_proj.weight"):
        array = permute(array, config.num_attention_heads)
    elif name.endswith("k_proj.weight"):
        array = permute(array, config.num_key_value_heads)
    if array.ndim < 2:
        return array.astype(np.float32), None
    if kind == "f16":
        return array.astype(np.float16), None
    quant = gguf.GGMLQuantizationType.BF16 if kind == "bf16" else gguf.GGMLQuantizationType.Q8_0
    try:
        return gguf.quants.quantize(array, quant), quant
    except gguf.QuantError:  # rows not a multiple of the block size
        log.info("gguf: %s stays f16 (%s cannot block rows of %d)", name, kind, array.shape[-1])
        return array.astype(np.float16), None


def add_tokenizer(writer, tokenizer_dir: Path, chat_template: str | None) -> None:
    """The tokenizer as llama.cpp reads it (see the module docstring)."""
    source = source_gguf(tokenizer_dir)
    if source is not None:
        copy_tokenizer(writer, source)
    else:
        build_tokenizer(writer, tokenizer_dir)
    if chat_template:
        writer.add_chat_template(chat_template)


def source_gguf(directory: Path) -> Path | None:
    """The GGUF file a `model.base_model` copy was converted from (nextai.base_model writes nextai_source.json)."""
    try:
        path = Path(json.loads((Path(directory) / "nextai_source.json").read_text())["gguf"])
    except (OSError, ValueError, KeyError):
        return None
    return path if path.is_file() else None


def copy_tokenizer(writer, source: Path) -> None:
    import gguf

    reader = gguf.GGUFReader(str(source))
    for key, value in reader.fields.items():
        if not key.startswith("tokenizer.") or key == "tokenizer.chat_template":
            continue
        types = value.types
        contents = value.contents()
        if types[0] == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, contents, types[0], sub_type=types[-1])
        else:
            writer.add_key_value(key, contents, types[0])


def build_tokenizer(writer, directory: Path) -> None:
    import gguf
    from gguf.vocab import BpeVocab, LlamaHfVocab, SentencePieceVocab

    directory = Path(directory)
    spec = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8")) \
        if (directory / "tokenizer.json").is_file() else {}
    model = spec.get("model") or {}
    if (directory / "tokenizer.model").is_file():
        vocab, kind, pre = SentencePieceVocab(directory), "llama", None
    elif model.get("type") == "BPE" and model.get("byte_fallback"):
        vocab, kind, pre = LlamaHfVocab(directory), "llama", None
    elif model.get("type") == "BPE":
        vocab, kind, pre = BpeVocab(directory), "gpt2", byte_level_pre(spec)
    else:
        raise NextaiError(f"{directory}: GGUF export knows BPE and SentencePiece tokenizers; this one is "
                          f"{model.get('type')!r}")
    tokens, scores, types = [], [], []
    for text, score, token_type in vocab.all_tokens():
        tokens.append(text)
        scores.append(score)
        types.append(token_type)
    if kind == "llama":  # llama.cpp merges a sentencepiece vocabulary by score: earlier (more frequent) first
        scores = [-float(i) if t == gguf.TokenType.NORMAL else s for i, (s, t) in enumerate(zip(scores, types))]
    writer.add_tokenizer_model(kind)
    if pre is not None:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(directory, load_merges=True, n_vocab=len(tokens))
    special.chat_template = None  # the run's template is written by add_tokenizer
    special.add_to_gguf(writer, quiet=True)


def byte_level_pre(spec: dict) -> str:
    """llama.cpp's name for a byte-level vocabulary's pre-tokenizer, for the shapes nextai can tell apart."""
    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
    types = [p.get("type") for p in parts]
    if types == ["Digits", "ByteLevel"] and parts[0].get("individual_digits"):
        return "smollm"
    if types == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    log.warning("gguf: unrecognised byte-level pre-tokenizer %s: written as llama.cpp's 'default'", types)
    return "default"


def write_gguf(model, tokenizer_dir: str | Path, path: str | Path, kind: GGUFType, name: str,
               chat_template: str | None) -> Path:
    """Write `model` (a merged LlamaForCausalLM) and its tokenizer as a GGUF file at `path` (not atomically: the
    caller writes into a temporary directory)."""
    import gguf

    if kind not in GGUF_TYPES:
        raise NextaiError(f"export: --gguf_type must be one of {', '.join(GGUF_TYPES)}, got {kind!r}")
    config = model.config
    check_llama(config)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type({"f16": gguf.LlamaFileType.MOSTLY_F16, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[kind])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_tokenizer(writer, Path(tokenizer_dir), chat_template)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reads a missing output.weight as tied to token_embd
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            if "rotary_emb" in hf_name:
                continue
            raise NextaiError(f"GGUF export: no llama.cpp name for tensor {hf_name}")
        data, raw_dtype = tensor_data(hf_name, tensor, config, kind)
        writer.add_tensor(gguf_name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)
