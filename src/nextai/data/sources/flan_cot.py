"""FLAN-v2 CoT (Chung et al. 2022): the chain-of-thought submixture of the FLAN collection, as exported by it."""

from nextai.data.records import AlpacaRecord
from nextai.data.sources.base import NativeSource, Row


class FlanCot(NativeSource):
    """FLAN collection export: `inputs` (the templated prompt, zero- or few-shot), `targets` (reasoning + answer),
    `task_name`, `task_source`, `template_type`."""

    name = "flan_cot"
    title = "FLAN-v2 CoT"
    hub_id = "DataProvenanceInitiative/cot_submix_original"

    def convert(self, row: Row) -> AlpacaRecord | None:
        return self.example(row.text("inputs"), row.text("targets"))
