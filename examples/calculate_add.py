"""Getting a task's result with ``ray.get`` (seed: "Ray Tasks", calculate_add.py)."""

import redray as ray


@ray.remote
def add(x: int, y: int):
    return x + y


obj_refs = []

for i in range(4):
    obj_refs.append(add.remote(i, 1))

res = [ray.get(obj_ref) for obj_ref in obj_refs]
print(res)  # [1, 2, 3, 4]
