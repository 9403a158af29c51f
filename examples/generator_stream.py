"""A generator task streams its values (seed 002, "Generators").

Without ``num_returns``, calling a generator task returns an
``ObjectRefGenerator``: each ``yield`` is published as its own object as soon
as it is produced, so the driver prints every value while the task is still
running. The guide sleeps 5 s per item (25 s in all); here 0.5 s.
"""

import time

import redray as ray


@ray.remote
def f():
    for i in range(5):
        time.sleep(0.5)  # the guide sleeps 5 s
        yield i


start = time.perf_counter()
for obj_ref in f.remote():
    # Prints one value about every 0.5 s, and stops after about 2.5 s.
    print(ray.get(obj_ref), f"(after {time.perf_counter() - start:.1f} s)")
