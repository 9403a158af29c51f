"""Seed 001: an actor handle passed to a task, which calls it 10 times."""

import redray as ray


@ray.remote
class Counter:
    def __init__(self, init_count: int = 0):
        self.count = init_count

    def increment(self):
        self.count += 1

    def get_count(self) -> int:
        return self.count


@ray.remote
def increment(counter: Counter, increment_num: int):
    for _ in range(increment_num):
        counter.increment.remote()


counter = Counter.remote()
increment_task_ref = increment.remote(counter, 10)
ray.get(increment_task_ref)
count = ray.get(counter.get_count.remote())
print(f"{count=}")
