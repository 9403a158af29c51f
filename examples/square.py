"""The minimal example of the "Ray from its terms" primer (seed 004)."""

import redray as ray

ray.init()  # starts a local cluster; ray.init(address="auto") joins one started with `redray start`


@ray.remote  # this function runs as a task, in another process
def heavy_compute(x: int) -> int:
    return x * x


futures = [heavy_compute.remote(i) for i in range(10)]  # submits the tasks; returns futures
results = ray.get(futures)  # waits for the futures' values
print(results)  # [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
