"""Evaluation instances and HELM's two random choices: which test instances run, which train ones are shown.

Both follow HELM (stanford-crfm/helm, `adaptation/adapters/adapter.py` and `in_context_learning_adapter.py`) so that
the same data and seed pick the same instances: test instances by numpy's `choice` without replacement seeded
with `seed`, in-context examples by cycling through answer labels (most frequent first, ties shuffled).
"""

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import cycle
from typing import Literal

Split = Literal["train", "valid", "test"]


@dataclass(frozen=True)
class Instance:
    """One question (or article) with its candidate answers (or reference summaries).

    `correct` indexes the correct `references`; `extra` carries what a task's own metrics need (BBQ's letters).
    """

    id: str
    input: str
    references: tuple[str, ...]
    correct: tuple[int, ...]
    split: Split
    extra: Mapping[str, object] = field(default_factory=dict)

    @property
    def first_correct(self) -> str | None:
        return self.references[self.correct[0]] if self.correct else None


def split_instances(instances: Sequence[Instance]) -> tuple[list[Instance], list[Instance]]:
    """(train, eval): HELM evaluates the valid and test splits together and draws examples from train."""
    train = [i for i in instances if i.split == "train"]
    evaluated = [i for i in instances if i.split in ("valid", "test")]
    return train, evaluated


def select_eval_instances(instances: Sequence[Instance], limit: int | None, seed: int = 0) -> list[Instance]:
    """At most `limit` instances, drawn as HELM does (`np.random.seed(seed)` then `choice(..., replace=False)`)."""
    import numpy as np

    if limit is None or len(instances) <= limit:
        return list(instances)
    chosen = np.random.RandomState(seed).choice(len(instances), limit, replace=False)
    return [instances[i] for i in chosen]


def sample_in_context_examples(train: Sequence[Instance], count: int, seed: int = 0) -> list[Instance]:
    """`count` train instances, chosen as HELM chooses in-context examples.

    Labels (the first correct reference's text) are ordered by how many instances have them, most first, ties in
    random order; then one instance at a time is drawn from each label in turn, so common answers come first and
    every answer shows up before any repeats. Instances without a correct reference fill what is left.
    """
    rng = random.Random(seed)
    remaining = min(len(train), count)
    by_label: dict[str, list[Instance]] = defaultdict(list)
    unlabeled: list[Instance] = []
    for instance in train:
        label = instance.first_correct
        if label:
            by_label[label].append(instance)
        else:
            unlabeled.append(instance)

    labels_by_count: dict[int, list[str]] = defaultdict(list)
    for label, members in sorted(by_label.items()):
        labels_by_count[len(members)].append(label)
    ordered: list[str] = []
    for size in sorted(labels_by_count, reverse=True):
        tied = labels_by_count[size]
        rng.shuffle(tied)
        ordered.extend(tied)

    examples: list[Instance] = []
    pools = {label: list(members) for label, members in by_label.items()}
    labels = cycle(ordered)
    while remaining > 0 and ordered:
        pool = pools[next(labels)]
        if not pool:
            if not any(pools.values()):
                break
            continue
        examples.append(pool.pop(rng.randrange(len(pool))))
        remaining -= 1
    examples += rng.sample(unlabeled, min(remaining, len(unlabeled)))
    return examples
