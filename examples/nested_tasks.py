"""Remote functions that call remote functions (seed 002, "nested remote functions").

``g`` returns the ObjectRefs of the tasks it submitted; ``h`` waits for its
tasks inside the task and returns their values. ``f`` must be defined before
``g`` and ``h``, which refer to it.
"""

import redray as ray


@ray.remote
def f():
    return 1


@ray.remote
def g():
    # Call f 4 times and return the resulting object refs.
    return [f.remote() for _ in range(4)]


@ray.remote
def h():
    # Call f 4 times, block until those 4 tasks finish,
    # retrieve the results, and return the values.
    return ray.get([f.remote() for _ in range(4)])


refs = ray.get(g.remote())
print(f"g returned {len(refs)} refs: {all(isinstance(r, ray.ObjectRef) for r in refs)}")
print("values of g's refs:", ray.get(refs))  # [1, 1, 1, 1]
print("h:", ray.get(h.remote()))  # [1, 1, 1, 1]
