"""`StepBoundary`: where an optimizer step ends, as the callbacks that act on whole steps see it.

Lightning calls `on_train_batch_end` after every micro batch; `global_step` moves only when an optimizer step has
completed, so a callback is at a step boundary when the counter has moved since its last look. Stopping, timing or
logging anywhere else would cut an accumulation window.
"""


class StepBoundary:
    def __init__(self) -> None:
        self.step = -1  # no step seen yet: the first batch end counts as a boundary unless `start` says otherwise

    def start(self, trainer) -> None:
        """Count from the trainer's current step (a run's start, or a resume): the next boundary is past it."""
        self.step = trainer.global_step

    def passed(self, trainer) -> bool:
        """An optimizer step completed since the last call (and this call moves past it)."""
        if trainer.global_step == self.step:
            return False
        self.step = trainer.global_step
        return True
