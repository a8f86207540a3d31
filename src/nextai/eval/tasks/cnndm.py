"""CNN/DailyMail summarization as HELM runs it: 5 examples, 3-sentence summaries, temperature 0.3, 128 tokens.

Data: a hub dataset with the `abisee/cnn_dailymail` 3.0.0 schema (article, highlights, id; splits train,
validation, test), or a local directory of `train.jsonl`, `validation.jsonl` and `test.jsonl` in that schema.
As in HELM, articles are cut to their first 512 words, in-context examples are train articles of 50 to 150 words,
and validation and test are evaluated together.

Metrics: ROUGE-1/2/L (ROUGE-2 is HELM's main CNN/DM number) and HELM's extractiveness statistics (coverage,
density, compression). Not reproduced: SummaC and BERTScore (HELM computes them only on a GPU device, and the
challenge ran with device=cpu), QAFactEval and HumanEval (precomputed by HELM for its own models), the bias
metrics (HELM's word lists) and toxicity (the Perspective API).
"""

from pathlib import Path

from nextai.errors import NextaiError
from nextai.eval.instances import Instance, Split
from nextai.eval.metrics import extractiveness, rouge_scores
from nextai.eval.prompts import PromptFormat
from nextai.eval.sources import field, is_local, load_hub, read_jsonl
from nextai.eval.tasks.base import Column, Scenario, Task

HUB_CONFIG = "3.0.0"
SPLITS: dict[str, Split] = {"train": "train", "validation": "valid", "test": "test"}
ARTICLE_WORDS = 512  # HELM's doc_max_length
EXAMPLE_WORDS = (50, 150)  # HELM's sampling_min_length / sampling_max_length for train articles

SUMMARY_FORMAT = PromptFormat(
    method="generation",
    input_prefix="###\nArticle: ",
    input_suffix="\n\n",
    output_prefix="Summarize the above article in 3 sentences.\n",
    output_suffix="\n",
    max_train_instances=5,
    max_tokens=128,
    temperature=0.3,
    stop_sequences=("###",),
)


def clean(text: str, max_words: int | None = None) -> str:
    """One line of at most `max_words` whitespace-separated words (HELM's `_clean_and_truncate`)."""
    return " ".join(text.replace("\n", " ").split()[:max_words])


def without_braces(text: str) -> str:
    """HELM drops one leading "{" and one trailing "}" before scoring summaries."""
    return text.removeprefix("{").removesuffix("}")


class CNNDailyMail(Task):
    name = "cnndm"
    title = "CNN/DailyMail"
    default_data = "abisee/cnn_dailymail"
    columns = (Column("CNN/DailyMail ROUGE-2", "rouge_2"),)

    def scenarios(self, location: str) -> list[Scenario]:
        instances = []
        for split_name, split in SPLITS.items():
            for where, ident, article, highlights in self._records(location, split_name):
                article = clean(article, ARTICLE_WORDS)
                if split == "train" and not EXAMPLE_WORDS[0] <= len(article.split()) <= EXAMPLE_WORDS[1]:
                    continue
                instances.append(Instance(id=ident or f"{split_name}:{where}", input=article,
                                          references=(clean(highlights),), correct=(0,), split=split))
        return [Scenario("summarization_cnndm:temperature=0.3", instances, SUMMARY_FORMAT)]

    def _records(self, location: str, split: str):
        if is_local(location):
            directory = Path(location)
            if not directory.is_dir():
                raise NextaiError(f"CNN/DailyMail data not found: {directory} (a directory of train.jsonl, "
                                  "validation.jsonl, test.jsonl)")
            path = directory / f"{split}.jsonl"
            if not path.is_file():
                raise NextaiError(f"CNN/DailyMail: no {split} file {path}")
            for where, row in read_jsonl(path):
                yield where, row.get("id"), field(row, "article", where), field(row, "highlights", where)
            return
        for number, row in enumerate(load_hub(location, HUB_CONFIG, split)):
            where = f"{location} {split} row {number}"
            yield where, row.get("id"), field(row, "article", where), field(row, "highlights", where)

    def score(self, instance: Instance, completion: str, fmt: PromptFormat) -> dict[str, float]:
        prediction = without_braces(completion.strip())
        references = [without_braces(r) for r in instance.references]
        return {**rouge_scores(prediction, references),
                **extractiveness(prediction, without_braces(instance.input))}
