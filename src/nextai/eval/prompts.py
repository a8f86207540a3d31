"""Prompts as HELM builds them: instructions, in-context examples and the test instance, fitted to the context.

`PromptFormat` holds the part of HELM's `AdapterSpec` that the challenge's four tasks use. Two methods exist:
`multiple_choice_joint` (options listed as "A. ...", the model answers with one letter) and `generation` (the model
writes the output, e.g. a summary). Blocks are joined by `instance_prefix`; the test block ends with the output
prefix, right-stripped (HELM: `adapters/multiple_choice_joint_adapter.py`, `in_context_learning_adapter.py`).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from nextai.eval.instances import Instance

Method = Literal["multiple_choice_joint", "generation"]


@dataclass(frozen=True)
class PromptFormat:
    """How one task turns instances into a prompt, and how the model is asked to continue it."""

    method: Method
    max_tokens: int
    temperature: float = 0.0
    stop_sequences: tuple[str, ...] = ()
    instructions: str = ""
    input_prefix: str = ""
    input_suffix: str = ""
    output_prefix: str = ""
    output_suffix: str = ""
    instance_prefix: str = "\n"
    reference_prefix: str = "A. "
    reference_suffix: str = "\n"
    max_train_instances: int = 5


def option_letter(index: int) -> str:
    return chr(ord("A") + index)


def multiple_choice_block(fmt: PromptFormat, instance: Instance, include_answer: bool) -> str:
    """Input, options "A. ...", then "Answer: C" (train) or "Answer:" (test)."""
    block = fmt.input_prefix + instance.input + fmt.input_suffix
    letter = fmt.reference_prefix.lstrip()[0]
    for index, reference in enumerate(instance.references):
        prefix = fmt.reference_prefix.replace(letter, chr(ord(letter) + index))
        block += prefix + reference + fmt.reference_suffix
    if not include_answer:
        return block + fmt.output_prefix.rstrip()
    answer = option_letter(instance.correct[0]) if instance.correct else "n/a"
    return block + fmt.output_prefix + answer + fmt.output_suffix


def generation_block(fmt: PromptFormat, instance: Instance, include_output: bool) -> str:
    """Input, then the output prefix and the first correct reference (train) or the bare prefix (test)."""
    block = fmt.input_prefix + instance.input + fmt.input_suffix
    if not include_output:
        return block + fmt.output_prefix.rstrip()
    output = instance.first_correct if instance.first_correct is not None else "n/a"
    return block + fmt.output_prefix + output + fmt.output_suffix


def example_block(fmt: PromptFormat, instance: Instance, include_output: bool) -> str:
    if fmt.method == "multiple_choice_joint":
        return multiple_choice_block(fmt, instance, include_output)
    return generation_block(fmt, instance, include_output)


def join_prompt(fmt: PromptFormat, train_blocks: Sequence[str], test_block: str) -> str:
    blocks = ([fmt.instructions] if fmt.instructions else []) + list(train_blocks) + [test_block]
    return fmt.instance_prefix.join(blocks)


@dataclass(frozen=True)
class FittedPrompt:
    text: str
    shots: int  # in-context examples kept
    truncated: bool  # cut from the right because even zero examples did not fit


def build_prompt(fmt: PromptFormat, examples: Sequence[Instance], instance: Instance,
                 count_tokens: Callable[[str], int], decode_prefix: Callable[[str, int], str],
                 context_window: int) -> FittedPrompt:
    """The prompt for `instance`, fitted as HELM fits it: drop the last in-context example until prompt tokens plus
    `max_tokens` fit `context_window`; with none left, keep the first `context_window - max_tokens` tokens (then
    characters from the right until it fits).

    `count_tokens(text)` counts as the model's tokenizer does (BOS included); `decode_prefix(text, n)` is the text
    of the first `n` tokens.
    """
    train_blocks = [example_block(fmt, example, include_output=True) for example in examples]
    test_block = example_block(fmt, instance, include_output=False)
    budget = context_window - fmt.max_tokens
    while True:
        text = join_prompt(fmt, train_blocks, test_block)
        if count_tokens(text) <= budget:
            return FittedPrompt(text, len(train_blocks), truncated=False)
        if not train_blocks:
            text = decode_prefix(text, max(budget, 0))
            while text and count_tokens(text) > budget:  # decoding can merge tokens differently; trim characters
                text = text[:-1]
            return FittedPrompt(text, 0, truncated=True)
        train_blocks.pop()
