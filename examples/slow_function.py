"""Four slow tasks run in parallel (seed: "Ray Tasks", slow_function_ray.py).

The tutorial sleeps 3 s per call and only submits the tasks; here each call
sleeps 1 s (to keep the example quick) and the driver also waits for the
results and prints the elapsed time, so the parallelism shows: run one after
another the calls would take 4 s, as tasks they take about 1 s on a machine
with 4 or more CPUs (2 s with 2 CPUs: one task per CPU at a time).
"""

import time

import redray as ray

SLEEP_SECONDS = 1  # the tutorial uses 3

# Optional (the first .remote() would start the cluster): keeps start-up out of the timing.
ray.init()


@ray.remote
def slow_function():
    time.sleep(SLEEP_SECONDS)


start = time.perf_counter()
refs = []
for _ in range(4):
    refs.append(slow_function.remote())  # returns at once: the task runs in the background
results = ray.get(refs)
elapsed = time.perf_counter() - start

print(f"results={results}")
print(
    f"4 tasks of {SLEEP_SECONDS} s each finished in {elapsed:.2f} s "
    f"(one after another they would take {4 * SLEEP_SECONDS} s)"
)
