"""LLaMA-2 architecture shapes for benchmarks (random weights: speed and memory need no checkpoint)."""

from nextai.errors import NextaiError

VOCAB = 32000
SHAPES: dict[str, dict] = {
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32),
    "13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
                num_key_value_heads=40),
    "70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                num_key_value_heads=8),
    "tiny": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
}


def llama_config(shape: str):
    """The transformers `LlamaConfig` of a named LLaMA-2 shape (4096 positions, 32000 tokens)."""
    from transformers import LlamaConfig

    if shape not in SHAPES:
        raise NextaiError(f"unknown model shape '{shape}'; known: {', '.join(SHAPES)}")
    return LlamaConfig(vocab_size=VOCAB, max_position_embeddings=4096, rms_norm_eps=1e-5, bos_token_id=1,
                       eos_token_id=2, pad_token_id=None, tie_word_embeddings=False, hidden_act="silu",
                       **SHAPES[shape])


def parameter_count(shape: str) -> int:
    """Parameters of the unquantized model (what 6N-FLOPs-per-token counts)."""
    s = SHAPES[shape]
    h, f, layers = s["hidden_size"], s["intermediate_size"], s["num_hidden_layers"]
    kv = s["num_key_value_heads"] * h // s["num_attention_heads"]
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * f + 2 * h
    return layers * per_layer + 2 * VOCAB * h + h
