"""redray.exceptions: each error keeps its message and attributes across
processes (cloudpickle, as errors travel to the driver) and carries Ray's
attributes."""

from __future__ import annotations

import cloudpickle
import pytest

from redray import exceptions as rx


def _round_trip(err: BaseException) -> BaseException:
    return cloudpickle.loads(cloudpickle.dumps(err))  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "err",
    [
        rx.ObjectLostError("ab12", "Object ab12 was freed by its owner."),
        rx.ObjectLostError("ab12"),
        rx.OwnerDiedError("ab12", "its owner died"),
        rx.TaskCancelledError("t1", "Task t1 was cancelled by the driver."),
        rx.TaskCancelledError("t1"),
        rx.ActorDiedError("The actor A (a1) is dead.", actor_id="a1"),
        rx.ActorAlreadyExistsError("The name n is already taken."),
        rx.ActorUnschedulableError("its node died"),
        rx.TaskUnschedulableError("its node died"),
        rx.RpcError("unavailable", rpc_code=14),
        rx.AuthenticationError("wrong token"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_an_error_keeps_its_message_and_class_across_processes(err: BaseException) -> None:
    again = _round_trip(err)
    assert type(again) is type(err)
    assert str(again) == str(err)
    assert vars(again) == vars(err)


def test_object_lost_error_keeps_its_object_id_across_processes() -> None:
    again = _round_trip(rx.ObjectLostError("ab12", "freed"))
    assert isinstance(again, rx.ObjectLostError) and again.object_id == "ab12"


def test_ray_actor_error_carries_rays_actor_id_and_error_msg() -> None:
    err = rx.ActorDiedError("The actor A (a1) is dead.", actor_id="a1")
    assert err.actor_id == "a1"
    assert err.error_msg == "The actor A (a1) is dead."
    assert err.actor_init_failed is False


def test_ray_actor_error_with_a_cause_says_its_init_failed() -> None:
    err = rx.ActorDiedError("init raised", cause=ValueError("bad"), actor_id="a1")
    assert err.actor_init_failed is True


def test_actor_already_exists_error_is_a_value_error_with_rays_error_message() -> None:
    err = rx.ActorAlreadyExistsError("taken")
    assert isinstance(err, ValueError) and isinstance(err, rx.RayError)
    assert err.error_message == "taken" and str(err) == "taken"


def test_unschedulable_errors_say_what_cannot_be_scheduled() -> None:
    assert str(rx.ActorUnschedulableError("x")) == "The actor is not schedulable: x"
    assert str(rx.TaskUnschedulableError("x")) == "The task is not schedulable: x"
