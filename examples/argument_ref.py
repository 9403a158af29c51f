"""Passing one task's ObjectRef to another task (seed: "Ray Tasks", argument_ref.py).

``second_function`` receives the *value* of ``first_ref``: it runs only once
``first_function`` has finished, and the driver never fetches the
intermediate result.
"""

import redray as ray


@ray.remote
def first_function(x: int):
    return x * 10


@ray.remote
def second_function(x: int):
    return x / 2


obj_refs = []

for i in range(1, 5):
    first_ref = first_function.remote(i)
    second_ref = second_function.remote(first_ref)
    obj_refs.append(second_ref)

res = [ray.get(obj_ref) for obj_ref in obj_refs]
print(res)  # [5.0, 10.0, 15.0, 20.0]
