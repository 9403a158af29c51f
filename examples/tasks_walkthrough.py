"""The Ray Core "Tasks" guide's Python snippets (seeds 002 and 003), run in order.

Covers: a remote function and ``ray.get``; tasks running in parallel (the
guide sleeps 10 s, here 1 s); passing an ObjectRef as an argument;
``ray.wait`` for the first finished task; one return value holding a tuple;
``num_returns=3`` with a plain function and with a generator.
"""

import time

import redray as ray


# A regular Python function.
def normal_function():
    return 1


# By adding the `@ray.remote` decorator, a regular Python function
# becomes a remote function.
@ray.remote
def my_function():
    return 1


# `.remote()` returns an ObjectRef (a future) at once; a worker process runs the task.
obj_ref = my_function.remote()
assert ray.get(obj_ref) == 1
print("my_function:", ray.get(obj_ref))


@ray.remote
def slow_function():
    time.sleep(1)  # the guide sleeps 10 s
    return 1


# Tasks run in parallel; submitting does not block.
slow_refs = [slow_function.remote() for _ in range(4)]


@ray.remote
def function_with_an_argument(value):
    return value + 1


obj_ref1 = my_function.remote()
assert ray.get(obj_ref1) == 1
# An ObjectRef passed as an argument arrives in the task as its value.
obj_ref2 = function_with_an_argument.remote(obj_ref1)
assert ray.get(obj_ref2) == 2
print("function_with_an_argument:", ray.get(obj_ref2))

# Return as soon as one of the tasks finished.
object_refs = [slow_function.remote() for _ in range(2)]
ready_refs, remaining_refs = ray.wait(object_refs, num_returns=1, timeout=None)
assert len(ready_refs) == 1 and len(remaining_refs) == 1
print(f"wait: {len(ready_refs)} ready, {len(remaining_refs)} remaining")


# By default a task returns a single ObjectRef...
@ray.remote
def return_single():
    return 0, 1, 2


object_ref = return_single.remote()
assert ray.get(object_ref) == (0, 1, 2)
print("return_single:", ray.get(object_ref))


# ...but num_returns makes it return several.
@ray.remote(num_returns=3)
def return_multiple():
    return 0, 1, 2


object_ref0, object_ref1, object_ref2 = return_multiple.remote()
assert ray.get(object_ref0) == 0
assert ray.get(object_ref1) == 1
assert ray.get(object_ref2) == 2
print("return_multiple:", ray.get([object_ref0, object_ref1, object_ref2]))


@ray.remote(num_returns=3)
def return_multiple_as_generator():
    for i in range(3):  # noqa: UP028 - as in the guide
        yield i


# As with a plain function, the objects are ready once the whole task is done.
a, b, c = return_multiple_as_generator.remote()
assert ray.get([a, b, c]) == [0, 1, 2]
print("return_multiple_as_generator:", ray.get([a, b, c]))

assert ray.get(slow_refs) == [1, 1, 1, 1]
print("slow_function x4:", ray.get(slow_refs))
print("All assertions passed.")
