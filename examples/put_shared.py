"""Put a large value once, share it with many tasks (seed 004, best practice 2).

``ray.put`` stores the list in the cluster once (about 5 MB: a large object,
split into pieces in Redis); every task gets it through the same ObjectRef
instead of a copy of the list travelling with each call.
"""

import redray as ray

N = 1_000_000
numbers_ref = ray.put(list(range(N)))


@ray.remote
def partial_sum(numbers, start: int, stop: int) -> int:
    return sum(numbers[start:stop])


step = N // 4
parts = [partial_sum.remote(numbers_ref, i, i + step) for i in range(0, N, step)]
total = sum(ray.get(parts))
print(f"sum of range({N}) = {total}")  # 499999500000
assert total == N * (N - 1) // 2
