"""Seed 001: a named actor found again with ray.get_actor."""

import redray as ray


@ray.remote
class Counter:
    def __init__(self, init_count: int = 0):
        self.count = init_count

    def increment(self):
        self.count += 1

    def get_count(self) -> int:
        return self.count


counter_origin = Counter.options(name="counter").remote()
ray.get(counter_origin.increment.remote())
counter_origin_value = ray.get(counter_origin.get_count.remote())
print(f"{counter_origin_value=}")

counter_from_namespace = ray.get_actor("counter")
ray.get(counter_from_namespace.increment.remote())
counter_from_namespace_value = ray.get(counter_from_namespace.get_count.remote())
print(f"{counter_from_namespace_value=}")
