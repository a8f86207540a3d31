"""`nextai export --format gguf`: the merged model written with the `gguf` package for llama.cpp, read back with
transformers' GGUF loader: the same logits as the merged model (f16: to float rounding; q8_0: within a stated
quantization error), the same tokens from its tokenizer, the run's prompt format as its chat template. On the tiny
run and on the real SmolLM2 (byte-level BPE, no BOS, ChatML, tied embeddings)."""

import json
from pathlib import Path

import pytest
import torch
from after_training import SMOL_CONFIG, TINY_CONFIG

from nextai.main import main

pytestmark = pytest.mark.slow
TEXTS = ["Give three tips for staying healthy.", "The capital of France is Paris. ÄÖü 123 {x}\n\tend  <|im_end|>"]
F16_TOLERANCE = 1e-4  # bf16 weights are exact in f16; what is left is float32 summation order
# q8_0 (8-bit blocks of 32): the largest logit difference as a share of the logits' standard deviation. Seen:
# tiny 0.057 (0.018 / 0.32), SmolLM2 0.13 (0.99 / 7.8; mean difference 0.15, the same argmax everywhere).
Q8_TOLERANCE = 0.2


def read_gguf(directory: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    [file] = directory.glob("*.gguf")
    options = {}
    try:  # transformers >= 5.25 can keep GGUF weights packed; compare dense ones
        from transformers import GgufConfig

        options["quantization_config"] = GgufConfig(gguf_file=file.name, dequantize=True)
    except ImportError:
        pass
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=file.name, dtype=torch.float32, **options)
    return model.eval(), AutoTokenizer.from_pretrained(directory, gguf_file=file.name), file


@torch.no_grad()
def logits(model, ids: list[int]) -> torch.Tensor:
    return model(input_ids=torch.tensor([ids])).logits[0].float()


def tensor_types(file: Path) -> dict[str, str]:
    import gguf

    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(file)).tensors}


@pytest.fixture(scope="module")
def exported(tiny_run):
    for kind in ("f16", "q8_0"):
        main(["export", "--config", TINY_CONFIG, "--trainer.default_root_dir", str(tiny_run), "--format", "gguf",
              "--gguf_type", kind])
    main(["export", "--config", TINY_CONFIG, "--trainer.default_root_dir", str(tiny_run), "--output_dir",
          str(tiny_run / "merged-for-gguf")])
    return tiny_run


def test_tiny_gguf_round_trip_gives_the_merged_models_logits_and_tokens(exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nextai.eval.chat_templates import alpaca_chat_template

    merged = AutoModelForCausalLM.from_pretrained(exported / "merged-for-gguf", dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(exported / "merged-for-gguf")
    ids = tokenizer(TEXTS[0]).input_ids
    expected = logits(merged, ids)
    differences = {}
    for kind in ("f16", "q8_0"):
        model, gguf_tokenizer, file = read_gguf(exported / f"gguf-{kind}")
        for text in TEXTS:  # llama.cpp's tokenizer metadata reads back as the same tokenizer
            assert gguf_tokenizer(text).input_ids == tokenizer(text).input_ids
        assert gguf_tokenizer.chat_template == alpaca_chat_template()  # the run trained on Alpaca prompts
        differences[kind] = (logits(model, ids) - expected).abs().max().item()
        types = tensor_types(file)
        assert types["blk.0.attn_norm.weight"] == "F32" and types["token_embd.weight"] == kind.upper()
        assert types["blk.1.ffn_down.weight"] == kind.upper() and "output.weight" in types  # not tied
        card = (exported / f"gguf-{kind}" / "README.md").read_text()
        assert "library_name: gguf" in card and f"| GGUF type | {kind} |" in card
        assert json.loads((exported / f"gguf-{kind}" / "prompt_format.json").read_text())["formats"]
    spread = expected.std().item()
    print(f"tiny: largest logit difference f16 {differences['f16']:.2e}, q8_0 {differences['q8_0']:.2e} "
          f"(logits' std {spread:.3f})")
    assert differences["f16"] < F16_TOLERANCE
    assert 0 < differences["q8_0"] < Q8_TOLERANCE * spread  # quantized for real, and close
    sizes = {kind: next((exported / f"gguf-{kind}").glob("*.gguf")).stat().st_size for kind in ("f16", "q8_0")}
    assert sizes["q8_0"] < 0.6 * sizes["f16"]


def test_gguf_export_of_a_non_llama_model_is_refused_before_merging(tiny_run, tmp_path, capsys):
    from transformers import AutoConfig

    from nextai.base_model import resolve_base_model
    from nextai.errors import NextaiError
    from nextai.eval.gguf import check_llama

    config = AutoConfig.from_pretrained(resolve_base_model("tiny"))
    check_llama(config)
    config.model_type = "mistral"
    with pytest.raises(NextaiError, match="supports the LLaMA architecture"):
        check_llama(config)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--config", TINY_CONFIG, "--trainer.default_root_dir", str(tiny_run), "--format", "gguf",
              "--gguf_type", "q4_k", "--output_dir", str(tmp_path / "never")])
    assert exit_info.value.code == 2 and "--gguf_type must be one of f16, bf16, q8_0" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def random_lora_adapter(base_dir: Path, directory: Path, tokenizer) -> Path:
    """A LoRA adapter with small random (non-zero) weights on SmolLM2's projections, of the size a short fine-tune
    makes (peft's random init, B scaled down: at full size it scrambles the model), with SmolLM2's ChatML format
    recorded, as a chat run leaves it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from nextai.data.chat import resolve_chat_template
    from nextai.data.prompt import PromptFormat

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
                        init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.mul_(0.05)
    model.save_pretrained(directory)
    PromptFormat(("messages",), resolve_chat_template(tokenizer)).save(directory)
    return directory


def test_smollm2_gguf_round_trip(smollm2_gguf, smollm2_dir, smollm2_tokenizer, tmp_path):
    """The real model: byte-level BPE copied from its source GGUF (pre-tokenizer `smollm`), no BOS, ChatML as the
    chat template, tied embeddings (no output.weight), q/k permuted for llama.cpp and back."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = random_lora_adapter(smollm2_dir, tmp_path / "adapter", smollm2_tokenizer)
    main(["export", "--config", SMOL_CONFIG, "--model.base_model", str(smollm2_gguf), "--trainer.default_root_dir",
          str(tmp_path / "run"), "--adapter", str(adapter), "--format", "gguf", "--gguf_type", "q8_0",
          "--output_dir", str(tmp_path / "gguf")])
    model, tokenizer, file = read_gguf(tmp_path / "gguf")
    for text in TEXTS:
        assert tokenizer(text).input_ids == smollm2_tokenizer(text).input_ids  # no BOS added, same pieces
    assert tokenizer.chat_template == smollm2_tokenizer.chat_template
    types = tensor_types(file)
    assert "output.weight" not in types and types["blk.0.attn_q.weight"] == "Q8_0"

    base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.bfloat16)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload().float().eval()
    ids = smollm2_tokenizer.apply_chat_template([{"role": "user", "content": TEXTS[0]}], add_generation_prompt=True,
                                                tokenize=True)
    ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    expected, got = logits(merged, ids), logits(model, ids)
    difference = (got - expected).abs().max().item()
    print(f"SmolLM2 q8_0: largest logit difference {difference:.4f} (logits' std {expected.std().item():.3f}); "
          f"argmax agreement {(got.argmax(-1) == expected.argmax(-1)).float().mean().item():.3f}")
    assert 0 < difference < Q8_TOLERANCE * expected.std().item()
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() > 0.95
