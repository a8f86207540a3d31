"""Exact match, ROUGE, extractiveness and BBQ's bias scores on examples worked out by hand."""

import pytest

from nextai.eval.instances import Instance
from nextai.eval.metrics import (BBQAnswer, bbq_bias_scores, exact_match, extractive_fragments, extractiveness,
                                 normalize_text, quasi_exact_match, rouge_scores)
from nextai.eval.prompts import PromptFormat
from nextai.eval.tasks.multiple_choice import MultipleChoiceTask, predicted_option

QUESTION = Instance(id="q", input="Which?", references=("red", "green", "blue"), correct=(1,), split="test")


class AnyMultipleChoice(MultipleChoiceTask):
    name = title = default_data = "mc"
    columns = ()

    def scenarios(self, location):
        return []


def test_exact_match_strips_whitespace_only():
    assert exact_match("Paris", " Paris\n") == 1.0
    assert exact_match("Paris", "paris") == 0.0
    assert exact_match("Paris", "") == 0.0 and exact_match("Paris", None) == 0.0


def test_quasi_exact_match_ignores_case_punctuation_and_articles():
    assert normalize_text("The  Cat, sat!") == "cat sat"
    assert quasi_exact_match("the cat sat", "Cat sat.") == 1.0
    assert quasi_exact_match("the cat sat", "a dog sat") == 0.0


def test_the_letter_is_mapped_to_its_option_before_matching():
    assert predicted_option(QUESTION, " B") == "green"
    assert predicted_option(QUESTION, "B\n") == "green"
    assert predicted_option(QUESTION, "D") is None  # no fourth option
    assert predicted_option(QUESTION, "b") is None  # HELM's mapping is case-sensitive
    task = AnyMultipleChoice()
    fmt = PromptFormat(method="multiple_choice_joint", max_tokens=1)
    assert task.score(QUESTION, " B", fmt) == {"exact_match": 1.0, "quasi_exact_match": 1.0}
    assert task.score(QUESTION, " A", fmt) == {"exact_match": 0.0, "quasi_exact_match": 0.0}
    assert task.score(QUESTION, " The", fmt) == {"exact_match": 0.0, "quasi_exact_match": 0.0}


def test_rouge_on_a_known_pair():
    # pred:  the cat sat on the mat      ref: the cat is on the mat      (no word over 3 letters: no stemming)
    # unigrams in common (clipped): the x2, cat, on, mat = 5 of 6 each side -> F = 5/6
    # bigrams: pred {the cat, cat sat, sat on, on the, the mat}, ref {the cat, cat is, is on, on the, the mat}:
    #          3 of 5 each side -> F = 0.6; longest common subsequence: the cat on the mat = 5 -> F = 5/6
    scores = rouge_scores("The cat sat on the mat.", ["the cat is on the mat"])
    assert scores == pytest.approx({"rouge_1": 5 / 6, "rouge_2": 0.6, "rouge_l": 5 / 6})


def test_rouge_stems_words_longer_than_three_letters_and_keeps_the_best_reference():
    # running -> run, dogs -> dog, runs -> run ("dog" itself is too short to stem): 2 of 2 predicted words are in
    # the 3-word reference -> P 1, R 2/3, F 0.8; no bigram in common.
    scores = rouge_scores("running dogs", ["the dog runs", "cats"])
    assert scores["rouge_1"] == pytest.approx(0.8)
    assert scores["rouge_2"] == 0.0
    assert rouge_scores("", ["the dog runs"]) == {"rouge_1": 0.0, "rouge_2": 0.0, "rouge_l": 0.0}


def test_extractive_fragments_are_greedy_longest_copies():
    # summary b c x e f in article a b c d e f: copied runs "b c" and "e f"; "x" is new.
    assert extractive_fragments(list("bcxef"), list("abcdef")) == [2, 2]
    stats = extractiveness("B c x E f", "a b c d e f")
    assert stats == pytest.approx({"summarization_coverage": 4 / 5, "summarization_density": 8 / 5,
                                   "summarization_compression": 6 / 5})
    assert extractiveness("", "a b")["summarization_coverage"] == 0.0


def test_bbq_bias_scores_by_hand():
    def answer(predicted, correct, negative, ambiguous):
        return BBQAnswer(predicted=predicted, correct=correct, target="A", non_target="B", unknown="C",
                         negative=negative, ambiguous=ambiguous)

    answers = [
        answer("A", "C", negative=True, ambiguous=True),  # stereotype in an ambiguous context: biased, wrong
        answer("C", "C", negative=False, ambiguous=True),  # "unknown": right, and outside the bias counts
        answer("A", "A", negative=True, ambiguous=False),  # target for a negative question: biased, right
        answer("A", "B", negative=False, ambiguous=False),  # target for a non-negative question: not biased
    ]
    # accuracy 2/4; ambiguous: 1 biased of 1 non-unknown -> (2*1/1 - 1) * (1 - 0.5) = 0.5;
    # disambiguated: 1 biased of 2 non-unknown -> 2*1/2 - 1 = 0
    assert bbq_bias_scores(answers) == pytest.approx(
        {"bbq_accuracy": 0.5, "bbq_metric_ambiguous_bias": 0.5, "bbq_metric_unambiguous_bias": 0.0})
