"""Seed 001 (Ray Actors tutorial): a counter actor keeps its state between calls."""

import redray as ray


@ray.remote
class Counter:
    def __init__(self, init_count: int = 0):
        self.count = init_count

    def increment(self):
        self.count += 1

    def get_count(self) -> int:
        return self.count


counter = Counter.remote()
init_value_ref = counter.get_count.remote()
init_value = ray.get(init_value_ref)
counter.increment.remote()
after_increment_value_ref = counter.get_count.remote()
after_increment_value = ray.get(after_increment_value_ref)

print(f"{init_value=}, {after_increment_value=}")
