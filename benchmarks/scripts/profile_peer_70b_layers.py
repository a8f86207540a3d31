"""Where Unsloth's 70B-shaped training step spends its GPU time, beside `profile_70b_layers.py`'s for nextai.

Loads the same 4-layer 70B-shaped random NF4 checkpoint with Unsloth (the peer of ../shared/peers: LoRA r 4 on
o_proj and down_proj, dropout 0.05, a batch of 4 x 1024 tokens), and profiles 3 micro steps (forward + backward)
the same way. `keep` runs Unsloth without activation checkpointing, `recompute` with its offloaded checkpointing.

    python benchmarks/scripts/profile_peer_70b_layers.py OUT_DIR [recompute|keep] [BATCHxSEQ (4x1024)]

Needs the peer's wheels (unsloth, unsloth_zoo, trl) importable; run `profile_70b_layers.py` first (it builds the
checkpoint).
"""

import sys
from pathlib import Path

import unsloth  # noqa: F401 - before torch/transformers/peft, so that its patches apply
from unsloth import FastLanguageModel

import torch  # noqa: E402

from profile_70b_layers import SHAPE, profile_report  # noqa: E402


def main(out: Path, policy: str, case: str = "4x1024") -> None:
    batch, seq = (int(n) for n in case.split("x"))
    out.mkdir(parents=True, exist_ok=True)
    model, _ = FastLanguageModel.from_pretrained(model_name=f"/tmp/nextai-bench/{SHAPE}", max_seq_length=4096,
                                                 dtype=torch.bfloat16, load_in_4bit=True, local_files_only=True)
    model = FastLanguageModel.get_peft_model(model, r=4, lora_alpha=16, lora_dropout=0.05,
                                             target_modules=["o_proj", "down_proj"], bias="none",
                                             use_gradient_checkpointing="unsloth" if policy == "recompute" else False,
                                             random_state=3407, max_seq_length=4096)
    FastLanguageModel.for_training(model)
    ids = torch.randint(3, 32000, (batch, seq), device="cuda", generator=torch.Generator("cuda").manual_seed(0))

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()

    text = profile_report(step, f"GPU time of Unsloth on a 70B-shaped layer stack, {batch} x {seq} tokens, "
                                f"layers {policy}", layers=4)
    suffix = "" if case == "4x1024" else f"-{case}"
    (out / f"profile-peer-70b-layers-{policy}{suffix}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "recompute",
         sys.argv[3] if len(sys.argv) > 3 else "4x1024")
