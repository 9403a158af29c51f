"""Objects above Redis's 512 MB value limit, and zero-copy numpy round trips."""

from __future__ import annotations

import numpy as np

import redray
from redray.constants import PIECE_LIMIT


@redray.remote
def last(x):
    return int(x[-1])


def test_object_larger_than_redis_value_limit_round_trips(cluster):
    n = (512 * 1024 * 1024 + PIECE_LIMIT // 2) // 8
    big = np.arange(n, dtype=np.int64)
    ref = redray.put(big)
    back = redray.get(ref)
    assert back.shape == big.shape
    assert back[-1] == n - 1 and back[12345] == 12345
    assert redray.get(last.remote(ref)) == n - 1


def test_large_numpy_result_is_read_only_like_ray(cluster):
    ref = redray.put(np.zeros(1_000_000))
    arr = redray.get(ref)
    assert not arr.flags.writeable
    assert arr.sum() == 0
