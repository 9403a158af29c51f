"""Errors raised by tasks, by their arguments and by their results."""

from __future__ import annotations

import threading

import pytest

import redray
from redray.exceptions import RayError, RayTaskError


class CodedError(Exception):
    """A user exception with an extra attribute."""

    def __init__(self, message, code):
        super().__init__(message, code)
        self.code = code


class LockedError(Exception):
    """An exception that cannot be pickled: it holds a lock."""

    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


@redray.remote
def raises_value_error(message):
    raise ValueError(message)


@redray.remote
def raises_coded_error(code):
    raise CodedError("coded failure", code)


@redray.remote
def raises_locked_error():
    raise LockedError("cannot travel")


@redray.remote
def echo(x):
    return x


@redray.remote
def returns_lock():
    return threading.Lock()


@redray.remote(num_returns=2)
def returns_three_values():
    return 1, 2, 3


@redray.remote(num_returns=2)
def returns_a_single_int():
    return 7


def test_task_error_is_ray_task_error_and_the_original_type(cluster):
    with pytest.raises(RayTaskError) as info:
        redray.get(raises_value_error.remote("bad input"))
    assert isinstance(info.value, ValueError)


def test_task_error_is_caught_by_except_of_the_original_type(cluster):
    with pytest.raises(ValueError):
        redray.get(raises_value_error.remote("bad input"))


def test_task_error_cause_is_the_original_exception(cluster):
    with pytest.raises(RayTaskError) as info:
        redray.get(raises_value_error.remote("the cause"))
    cause = info.value.cause
    assert type(cause) is ValueError
    assert cause.args == ("the cause",)


def test_task_error_text_holds_the_remote_traceback(cluster):
    with pytest.raises(RayTaskError) as info:
        redray.get(raises_value_error.remote("the distinctive message"))
    text = str(info.value)
    assert "raises_value_error" in text
    assert "the distinctive message" in text
    assert "Traceback" in text


def test_task_error_is_raised_again_on_every_get(cluster):
    ref = raises_value_error.remote("again")
    for _ in range(2):
        with pytest.raises(ValueError):
            redray.get(ref)


def test_task_error_in_a_list_get_is_raised(cluster):
    refs = [echo.remote(1), raises_value_error.remote("in a list")]
    with pytest.raises(ValueError):
        redray.get(refs)


def test_custom_exception_keeps_its_class_and_attributes(cluster):
    with pytest.raises(CodedError) as info:
        redray.get(raises_coded_error.remote(42))
    err = info.value
    assert isinstance(err, RayTaskError)
    assert err.code == 42


def test_failed_dependency_fails_the_dependant_with_the_original_error_type(cluster):
    failed = raises_value_error.remote("upstream broke")
    dependant = echo.remote(failed)
    with pytest.raises(RayTaskError) as info:
        redray.get(dependant)
    assert isinstance(info.value, ValueError)
    assert "upstream broke" in str(info.value)


def test_failed_dependency_two_levels_up_reaches_the_last_task(cluster):
    failed = raises_value_error.remote("far upstream")
    with pytest.raises(ValueError):
        redray.get(echo.remote(echo.remote(failed)))


def test_unpicklable_argument_is_type_error_naming_function_and_argument(cluster):
    with pytest.raises(TypeError) as info:
        echo.remote(threading.Lock())
    text = str(info.value)
    assert "echo" in text
    assert "lock" in text.lower()


def test_unpicklable_keyword_argument_is_type_error_naming_it(cluster):
    with pytest.raises(TypeError) as info:
        echo.remote(x=threading.Lock())
    text = str(info.value)
    assert "echo" in text
    assert "lock" in text.lower()


def test_unpicklable_return_value_error_names_the_function(cluster):
    with pytest.raises(RayError) as info:
        redray.get(returns_lock.remote())
    assert "returns_lock" in str(info.value)


def test_unpicklable_return_value_is_a_ray_task_error(cluster):
    with pytest.raises(RayTaskError):
        redray.get(returns_lock.remote())


def test_unpicklable_exception_still_produces_a_ray_task_error(cluster):
    with pytest.raises(RayTaskError) as info:
        redray.get(raises_locked_error.remote())
    text = str(info.value)
    assert "raises_locked_error" in text
    assert "cannot travel" in text


def test_unpicklable_exception_cause_is_a_ray_error_saying_so(cluster):
    # Ray: the cause is replaced by a RayError: "The original cause of the
    # RayTaskError (<class 'LockedError'>) isn't serializable: ..."
    with pytest.raises(RayTaskError) as info:
        redray.get(raises_locked_error.remote())
    cause = info.value.cause
    assert isinstance(cause, RayError)
    assert "LockedError" in str(cause)
    assert "serializ" in str(cause)


def test_too_many_returned_values_for_num_returns_is_value_error(cluster):
    refs = returns_three_values.remote()
    for ref in refs:
        with pytest.raises(RayTaskError) as info:
            redray.get(ref)
        assert isinstance(info.value, ValueError)


def test_non_iterable_result_for_num_returns_two_is_value_error(cluster):
    first, _ = returns_a_single_int.remote()
    with pytest.raises(RayTaskError) as info:
        redray.get(first)
    assert isinstance(info.value, ValueError)


def test_a_failed_task_does_not_break_the_next_one(cluster):
    with pytest.raises(ValueError):
        redray.get(raises_value_error.remote("once"))
    assert redray.get(echo.remote("fine")) == "fine"
