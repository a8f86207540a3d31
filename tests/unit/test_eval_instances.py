"""Which test instances run and which train instances are shown, chosen as HELM chooses them."""

import numpy as np

from nextai.eval.instances import Instance, sample_in_context_examples, select_eval_instances, split_instances


def labeled(ident: str, answer: str, split="train") -> Instance:
    return Instance(id=ident, input=f"say {answer}", references=(answer,), correct=(0,), split=split)


def test_examples_cover_every_answer_most_frequent_first():
    # HELM's own docstring example: from (no, yes, yes) two examples are a "yes" (the common label) then the "no".
    train = [labeled("n", "no"), labeled("y1", "yes"), labeled("y2", "yes")]
    picked = sample_in_context_examples(train, 2, seed=0)
    assert [i.references[0] for i in picked] == ["yes", "no"]


def test_examples_cycle_labels_before_repeating_one():
    train = [labeled(f"{a}{n}", a) for a in "ABCD" for n in range(5 if a == "A" else 2)]
    picked = sample_in_context_examples(train, 5, seed=3)
    answers = [i.references[0] for i in picked]
    assert answers[0] == "A" and sorted(answers[:4]) == ["A", "B", "C", "D"] and len({i.id for i in picked}) == 5
    assert sample_in_context_examples(train, 5, seed=3) == picked  # fixed seed, same examples
    assert len(sample_in_context_examples(train, 20, seed=0)) == len(train)  # asking for more gives all


def test_unlabeled_instances_fill_what_labels_cannot():
    unlabeled = [Instance(id=f"u{i}", input="x", references=(), correct=(), split="train") for i in range(3)]
    picked = sample_in_context_examples([labeled("a", "a"), *unlabeled], 3, seed=0)
    assert picked[0].id == "a" and {i.id for i in picked[1:]} <= {"u0", "u1", "u2"} and len(picked) == 3


def test_eval_instances_are_numpys_choice_with_the_seed():
    instances = [labeled(str(i), "x", split="test") for i in range(40)]
    np.random.seed(0)
    expected = np.random.choice(40, 7, replace=False)  # what HELM's adapter does with max_eval_instances=7
    assert [i.id for i in select_eval_instances(instances, 7, seed=0)] == [str(i) for i in expected]
    assert select_eval_instances(instances, 100, seed=0) == instances
    assert select_eval_instances(instances, 7, seed=1) != select_eval_instances(instances, 7, seed=0)


def test_valid_and_test_are_evaluated_together():
    instances = [labeled("t", "x"), labeled("v", "x", "valid"), labeled("s", "x", "test")]
    train, evaluated = split_instances(instances)
    assert [i.id for i in train] == ["t"] and [i.id for i in evaluated] == ["v", "s"]
