"""Four slow tasks run in parallel (seed: "Ray Tasks", slow_function_ray.py).

The tutorial sleeps 3 s per call and only submits the tasks; here each call
sleeps 1 s (to keep the example quick), returns when its sleep began and
ended, and the driver waits for the results, so the parallelism shows: run
one after another the calls would take 4 s; as tasks up to one per CPU runs
at a time (all 4 at once with 4 or more CPUs, 2 at a time with 2).
"""

import time

import redray as ray

SLEEP_SECONDS = 1  # the tutorial uses 3

# Optional (the first .remote() would start the cluster): keeps start-up out of the timing.
ray.init()


@ray.remote
def slow_function():
    began = time.time()
    time.sleep(SLEEP_SECONDS)
    return began, time.time()


start = time.perf_counter()
refs = []
for _ in range(4):
    refs.append(slow_function.remote())  # returns at once: the task runs in the background
spans = ray.get(refs)
elapsed = time.perf_counter() - start

# how many sleeps were under way at the moment one of them began
at_once = max(sum(1 for b, e in spans if b <= t < e) for t, _ in spans)
print(
    f"4 tasks of {SLEEP_SECONDS} s each finished in {elapsed:.2f} s "
    f"(one after another they would take {4 * SLEEP_SECONDS} s)"
)
print(f"at most {at_once} of them ran at the same time")
