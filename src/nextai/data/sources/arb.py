"""ARB (Sawada et al. 2023): expert-level math, physics, law and MCAT problems with written solutions."""

from nextai.data.records import AlpacaRecord
from nextai.data.sources.base import NativeSource, Row, lettered


class ARB(NativeSource):
    """ARB problems as its API serves them: `Problem Statement` (or `Problem_Statement`), `Answer Candidates` (for
    multiple choice), `Solution` and/or `Final Answer`. The output is the solution, else the final answer."""

    name = "arb"
    title = "ARB: Advanced Reasoning Benchmark"
    hub_id = "imone/ARB"
    # One file per subject, each with its own fields: read one by one.
    hub_files = {"train": ("law.json", "math.json", "physics.json", "reading.json", "science.json")}

    def convert(self, row: Row) -> AlpacaRecord | None:
        problem = row.first_text("Problem Statement", "Problem_Statement")
        if row.has("Answer Candidates"):
            problem = f"{problem}\n{lettered(row.texts('Answer Candidates'))}"
        if row.has("Solution"):
            output = row.text("Solution")
        elif row.has("Final Answer"):
            output = row.scalar_text("Final Answer")
        else:
            return None
        return self.example(problem, output)
