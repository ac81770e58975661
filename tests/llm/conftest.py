"""Fixtures of the LLM tests that stand between the code and lm-eval."""

from __future__ import annotations

import pytest


class LmEvalRuns:
    """Stands in for ``lm_eval.simple_evaluate``: records the task of every run, in order, in
    ``tasks``, and with ``cut_at = n`` makes the n-th run raise KeyboardInterrupt (a Ctrl-C in the
    middle of a zero-shot evaluation); every other run is lm-eval's own."""

    def __init__(self, real) -> None:
        self.real = real
        self.tasks: list[str] = []
        self.cut_at: int | None = None

    def __call__(self, *args, tasks, **kwargs):
        self.tasks.append(tasks[0].config.task)
        if len(self.tasks) == self.cut_at:
            raise KeyboardInterrupt
        return self.real(*args, tasks=tasks, **kwargs)

    def restart(self) -> None:
        """Forget the runs so far and cut no more: the rerun after an interruption."""
        self.tasks.clear()
        self.cut_at = None


@pytest.fixture
def lm_eval_runs(monkeypatch) -> LmEvalRuns:
    """:class:`LmEvalRuns` in place of ``lm_eval.simple_evaluate`` until the test ends (or
    ``monkeypatch.undo()``)."""
    import lm_eval

    runs = LmEvalRuns(lm_eval.simple_evaluate)
    monkeypatch.setattr(lm_eval, "simple_evaluate", runs)
    return runs
