"""HELM's joint multiple-choice setting, shared by MMLU, BBQ and TruthfulQA: options listed with letters, five
in-context examples, one greedy token, the letter mapped back to its option and compared with the correct one."""

from nextai.eval.instances import Instance
from nextai.eval.metrics import best_over_golds, exact_match, quasi_exact_match
from nextai.eval.prompts import PromptFormat, option_letter
from nextai.eval.tasks.base import Task


def joint_format(instructions: str, input_noun: str | None) -> PromptFormat:
    """HELM's `get_multiple_choice_adapter_spec(method=multiple_choice_joint, ...)` as of the challenge (2023):
    max_tokens 1, temperature 0, 5 examples, no stop sequences."""
    return PromptFormat(
        method="multiple_choice_joint",
        instructions=instructions + "\n" if instructions else "",
        input_prefix=f"{input_noun}: " if input_noun else "",
        input_suffix="\n" if input_noun else "",
        output_prefix="Answer: ",
        output_suffix="\n",
        max_train_instances=5,
        max_tokens=1,
        temperature=0.0,
        stop_sequences=(),
    )


def predicted_option(instance: Instance, completion: str) -> str | None:
    """The option text the completion's letter names, or None when it names none ("E" of four, "The")."""
    letters = {option_letter(index): reference for index, reference in enumerate(instance.references)}
    return letters.get(completion.strip())


class MultipleChoiceTask(Task):
    def score(self, instance: Instance, completion: str, fmt: PromptFormat) -> dict[str, float]:
        prediction = predicted_option(instance, completion)
        golds = [instance.references[i] for i in instance.correct]
        return {
            "exact_match": best_over_golds(exact_match, golds, prediction),
            "quasi_exact_match": best_over_golds(quasi_exact_match, golds, prediction),
        }
