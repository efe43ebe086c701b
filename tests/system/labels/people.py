"""A person at the annotation queue, as the tests drive one: they read the two responses in the order shown to
them and answer for the one whose text they prefer."""

from __future__ import annotations

from typing import Any

from system.labels import HumanQueue


def answer_for(queue: HumanQueue, task_id: int, who: str, preferred: int, **kwargs: Any) -> Any:
    """``who`` answers task ``task_id`` for the pair's response ``preferred`` (1 or 2), found by its text among the
    responses as shown to them."""
    task = queue.task(task_id)
    assert task is not None
    wanted = task.response_1 if preferred == 1 else task.response_2
    first_shown, _ = task.shown_to(who)
    return queue.answer(task_id, 1 if first_shown == wanted else 2, who, **kwargs)
