"""Multi-News (Fabbri et al. 2019): news articles about one event and a human-written summary of them all."""

import re

from nextai.data.records import AlpacaRecord
from nextai.data.sources.base import NativeSource, Row

ARTICLE_SEPARATOR = "|||||"
INSTRUCTION = "Summarize the following news articles."


WORD = re.compile(r"\S+")


def first_words(text: str, limit: int) -> str:
    """The text up to its `limit`-th word, line breaks kept; " ..." marks a cut."""
    for count, word in enumerate(WORD.finditer(text), start=1):
        if count == limit:
            rest = text[word.end():]
            return text[: word.end()] + (" ..." if rest.strip() else "")
    return text


class MultiNews(NativeSource):
    """multi_news: `document` (the articles, separated by `|||||`), `summary` (starts with an en dash).

    Args:
        location: see `NativeSource`.
        split: see `NativeSource`.
        max_words: keep the first this many words of the articles (HELM's CNN/DailyMail prompt shows 512), so
            that the summary still fits in the cutoff length instead of being cut off.
    """

    name = "multi_news"
    title = "Multi-News"
    hub_id = "alexfabbri/multi_news"

    def __init__(self, location: str | None = None, split: str | None = None, max_words: int = 512) -> None:
        super().__init__(location, split)
        self.max_words = max_words

    def options(self) -> dict:
        return {"max_words": self.max_words}

    def convert(self, row: Row) -> AlpacaRecord | None:
        articles = [a.strip() for a in row.text("document").split(ARTICLE_SEPARATOR) if a.strip()]
        summary = row.text("summary").strip().lstrip("–-").strip()
        return self.example(INSTRUCTION, summary, first_words("\n\n".join(articles), self.max_words))
