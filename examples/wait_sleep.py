"""Splitting finished from unfinished tasks with ``ray.wait`` (seed: "Ray Tasks", wait_sleep.py).

The tutorial sleeps [1, 3, 20, 30] s; the short sleeps are scaled down here to
[0.5, 1] s. ``ray.wait(num_returns=2)`` returns as soon as two tasks are done;
the script then exits at once: shutting down does not wait for the 20 s and
30 s tasks, which are stopped with the cluster.
"""

import time

import redray as ray


@ray.remote
def sleep(seconds: float):
    time.sleep(seconds)


sleep_seconds = [0.5, 1, 20, 30]  # the tutorial uses [1, 3, 20, 30]
obj_refs = []

for sleep_second in sleep_seconds:
    obj_refs.append(sleep.remote(sleep_second))


start = time.perf_counter()
ready_refs, remain_refs = ray.wait(obj_refs, num_returns=2, timeout=None)
print(f"{ready_refs=}")
print(f"{remain_refs=}")
print(
    f"{len(ready_refs)} ready, {len(remain_refs)} still running after "
    f"{time.perf_counter() - start:.1f} s; ready are the short sleeps: "
    f"{ready_refs == obj_refs[:2]}"
)
