"""Prompts as HELM builds them for each task, character for character, and fitted to the context window."""

from nextai.eval.instances import Instance
from nextai.eval.prompts import build_prompt
from nextai.eval.tasks.cnndm import SUMMARY_FORMAT
from nextai.eval.tasks.mmlu import instructions
from nextai.eval.tasks.multiple_choice import joint_format


def words(text: str) -> int:
    return len(text.split())


def first_words(text: str, count: int) -> str:
    return " ".join(text.split()[:count])


def mc(ident, question, options, correct, split="train"):
    return Instance(id=ident, input=question, references=tuple(options), correct=(correct,), split=split)


EXAMPLES = [mc("1", "2 + 2 =", ["3", "4"], 1), mc("2", "Capital of Peru?", ["Lima", "Quito"], 0)]
TEST = mc("3", "Largest planet?", ["Mars", "Venus", "Jupiter"], 2, split="test")


def test_mmlu_prompt():
    fmt = joint_format(instructions("high_school_geography"), "Question")
    prompt = build_prompt(fmt, EXAMPLES, TEST, words, first_words, 2048)
    assert prompt.text == (
        "The following are multiple choice questions (with answers) about high school geography.\n"
        "\n"
        "Question: 2 + 2 =\nA. 3\nB. 4\nAnswer: B\n"
        "\n"
        "Question: Capital of Peru?\nA. Lima\nB. Quito\nAnswer: A\n"
        "\n"
        "Question: Largest planet?\nA. Mars\nB. Venus\nC. Jupiter\nAnswer:")
    assert prompt.shots == 2 and not prompt.truncated
    assert (fmt.max_tokens, fmt.temperature, fmt.stop_sequences) == (1, 0.0, ())


def test_bbq_prompt_reads_passage_then_question():
    fmt = joint_format("The following are multiple choice questions (with answers).", "Passage")
    test = mc("b", "Two people met.\nQuestion: Who was late?", ["The first", "The second", "Unknown"], 2, "test")
    prompt = build_prompt(fmt, [], test, words, first_words, 2048)
    assert prompt.text == ("The following are multiple choice questions (with answers).\n\n"
                           "Passage: Two people met.\nQuestion: Who was late?\n"
                           "A. The first\nB. The second\nC. Unknown\nAnswer:")


def test_truthfulqa_prompt_has_no_instructions():
    prompt = build_prompt(joint_format("", "Question"), EXAMPLES[:1], TEST, words, first_words, 2048)
    assert prompt.text == ("Question: 2 + 2 =\nA. 3\nB. 4\nAnswer: B\n\n"
                           "Question: Largest planet?\nA. Mars\nB. Venus\nC. Jupiter\nAnswer:")


def test_cnndm_prompt_and_decoding():
    example = Instance(id="e", input="Rain fell all day.", references=("It rained.",), correct=(0,), split="train")
    test = Instance(id="t", input="The sun came out.", references=("Sunny.",), correct=(0,), split="test")
    prompt = build_prompt(SUMMARY_FORMAT, [example], test, words, first_words, 2048)
    assert prompt.text == ("###\nArticle: Rain fell all day.\n\nSummarize the above article in 3 sentences.\n"
                           "It rained.\n\n"
                           "###\nArticle: The sun came out.\n\nSummarize the above article in 3 sentences.")
    assert (SUMMARY_FORMAT.max_tokens, SUMMARY_FORMAT.temperature, SUMMARY_FORMAT.stop_sequences) == \
        (128, 0.3, ("###",))


def test_examples_are_dropped_from_the_end_until_prompt_and_answer_fit():
    fmt = joint_format("", "Question")  # max_tokens 1
    full = build_prompt(fmt, EXAMPLES, TEST, words, first_words, 2048)
    without_last = build_prompt(fmt, EXAMPLES[:1], TEST, words, first_words, 2048)
    fitted = build_prompt(fmt, EXAMPLES, TEST, words, first_words, words(without_last.text) + 1)
    assert fitted.text == without_last.text and fitted.shots == 1
    assert build_prompt(fmt, EXAMPLES, TEST, words, first_words, words(full.text) + 1).shots == 2


def test_a_prompt_too_long_without_examples_is_cut_from_the_right():
    fmt = joint_format("", "Question")
    fitted = build_prompt(fmt, EXAMPLES, TEST, words, first_words, 4)
    assert fitted.truncated and fitted.shots == 0
    assert fitted.text == "Question: Largest planet?"  # 3 words + 1 answer token = the window
