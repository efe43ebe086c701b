"""The one error line of a failed command, also for an error raised inside a Ray actor."""

from __future__ import annotations

import traceback

from ray.exceptions import RayTaskError

from jobs.cli import error_line
from system.errors import ActorFailureError


def test_an_error_from_inside_an_actor_prints_its_own_message_not_the_actors_traceback() -> None:
    message = "features: worker 1 died 3 times; raise cluster.retries.max_restarts"
    try:
        raise ActorFailureError(message)
    except ActorFailureError as exc:
        wrapped = RayTaskError("SelectorActor.select", traceback.format_exc(), exc).as_instanceof_cause()
    assert isinstance(wrapped, ActorFailureError) and "pid=" in str(wrapped)  # what Ray hands the driver: a traceback
    assert error_line(wrapped) == f"error: {message}"
    assert error_line(ActorFailureError(message)) == f"error: {message}"
