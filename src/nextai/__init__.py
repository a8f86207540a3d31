"""nextai: QLoRA fine-tuning of LLaMA-2 on one GPU inside a wall-clock budget."""

__version__ = "0.1.0"
