"""BBQ (Parrish et al. 2022), all 11 categories as one HELM run: exact match, plus BBQ's bias scores.

Data: the original JSON-lines files (`<Category>.jsonl`, one record per line with context, question, ans0-ans2,
label, answer_info, question_polarity, context_condition, additional_metadata.stereotyped_groups) in a local
directory or under a URL (default: the nyu-mll/BBQ repository, where HELM downloads them). As in HELM, records are
shuffled with seed 0 and the last 1000 are the test split (files with fewer than 2000 records keep half for
in-context examples).
"""

import logging
import random
from pathlib import Path

from nextai.errors import NextaiError
from nextai.eval.instances import Instance
from nextai.eval.metrics import BBQAnswer, bbq_bias_scores
from nextai.eval.prompts import option_letter
from nextai.eval.sources import download, field, is_local, is_url, read_jsonl
from nextai.eval.tasks.base import Column, Scenario
from nextai.eval.tasks.multiple_choice import MultipleChoiceTask, joint_format

log = logging.getLogger(__name__)

CATEGORIES = ("Age", "Disability_status", "Gender_identity", "Nationality", "Physical_appearance", "Race_ethnicity",
              "Race_x_SES", "Race_x_gender", "Religion", "SES", "Sexual_orientation")
TEST_SIZE = 1000  # HELM's DEFAULT_TEST_SIZE
SHUFFLE_SEED = 0  # HELM shuffles BBQ with a fixed seed before splitting
UNKNOWN_ANSWERS = ("Cannot answer", "Can't be determined", "Cannot be determined", "Can't answer", "Not known",
                   "Not enough info", "Not enough information", "Not answerable", "Undetermined", "Unknown")


def is_stereotyped(info: list[str], groups: list[str], category: str) -> bool:
    """Does an answer (its answer_info entry) name one of the stereotyped groups? HELM's matching rules."""
    for group in groups:
        if group in info:
            return True
        if category == "Race_ethnicity" and group in ("Black", "African American", "Latino") \
                and any(group in entry for entry in info):
            return True
        if category == "SES" and group == "low SES" and any("lowSES" in entry for entry in info):
            return True
        if category == "Race_x_SES" and any(f"lowSES-{group}" in entry or f"lowSES-M-{group}" in entry
                                            or f"lowSES-F-{group}" in entry for entry in info):
            return True
    return False


def bbq_instance(record: dict, where: str, category: str, split, ident: str) -> Instance:
    answers = tuple(field(record, f"ans{i}", where) for i in range(3))
    label = field(record, "label", where, int)
    if not 0 <= label < 3:
        raise NextaiError(f"{where}: label {label} is not 0, 1 or 2")
    info = field(record, "answer_info", where, dict)
    groups = field(field(record, "additional_metadata", where, dict), "stereotyped_groups", where, list)
    unknown = target = non_target = ""
    for i in range(3):
        entry = info.get(f"ans{i}")
        if not isinstance(entry, list):
            raise NextaiError(f"{where}: answer_info.ans{i} must be a list, got {type(entry).__name__}")
        if any(response in entry for response in UNKNOWN_ANSWERS):
            unknown = option_letter(i)
        elif is_stereotyped(entry, groups, category):
            target = option_letter(i)
        else:
            non_target = option_letter(i)
    context, question = field(record, "context", where), field(record, "question", where)
    return Instance(
        id=ident, input=f"{context}\nQuestion: {question}", references=answers,
        correct=tuple(i for i, a in enumerate(answers) if a == answers[label]), split=split,
        extra={"category": category, "correct_letter": option_letter(label), "target": target,
               "non_target": non_target, "unknown": unknown,
               "negative": field(record, "question_polarity", where) == "neg",
               "ambiguous": field(record, "context_condition", where) == "ambig"})


class BBQ(MultipleChoiceTask):
    name = "bbq"
    title = "BBQ"
    default_data = "https://raw.githubusercontent.com/nyu-mll/BBQ/main/data"
    columns = (Column("BBQ", "exact_match"),)

    def scenarios(self, location: str) -> list[Scenario]:
        records = []
        for category, path in self._files(location):
            records += [(record, where, category) for where, record in read_jsonl(path)]
        if not records:
            raise NextaiError(f"{location}: no BBQ records")
        random.Random(SHUFFLE_SEED).shuffle(records)
        test_size = TEST_SIZE if len(records) >= 2 * TEST_SIZE else len(records) - len(records) // 2
        first_test = len(records) - test_size
        instances = [bbq_instance(record, where, category, "train" if index < first_test else "test",
                                  f"{category}:{record.get('example_id', index)}")
                     for index, (record, where, category) in enumerate(records)]
        fmt = joint_format("The following are multiple choice questions (with answers).", "Passage")
        return [Scenario("bbq:subject=all", instances, fmt)]

    def _files(self, location: str) -> list[tuple[str, Path]]:
        if is_url(location):
            return [(category, download(f"{location.rstrip('/')}/{category}.jsonl")) for category in CATEGORIES]
        if not is_local(location):
            raise NextaiError(f"BBQ data '{location}': expected a directory of <Category>.jsonl files or a URL "
                              "holding them (BBQ is not read from a hub dataset)")
        directory = Path(location)
        if not directory.is_dir():
            raise NextaiError(f"BBQ data not found: {directory} (a directory of <Category>.jsonl files)")
        held = [(c, directory / f"{c}.jsonl") for c in CATEGORIES if (directory / f"{c}.jsonl").is_file()]
        if not held:
            raise NextaiError(f"{directory}: holds none of BBQ's category files ({CATEGORIES[0]}.jsonl, ...)")
        if len(held) < len(CATEGORIES):
            log.info("BBQ: %d of %d categories are in %s: %s", len(held), len(CATEGORIES), directory,
                     ", ".join(c for c, _ in held))
        return held

    def aggregate(self, instances, completions, scores) -> dict[str, float]:
        metrics = super().aggregate(instances, completions, scores)
        # HELM leaves empty completions out of BBQ's own metrics.
        answers = [BBQAnswer(predicted=text.strip(), correct=i.extra["correct_letter"], target=i.extra["target"],
                             non_target=i.extra["non_target"], unknown=i.extra["unknown"],
                             negative=i.extra["negative"], ambiguous=i.extra["ambiguous"])
                   for i, text in zip(instances, completions) if text]
        return {**metrics, **bbq_bias_scores(answers)}
