"""A task with several return values (seed: "Ray Tasks", multiple_returns.py).

With ``num_returns=3`` a call returns three ObjectRefs: take them as one list
(``ray.get`` of the list gives ``[1, 2, 3]``) or unpack them.
"""

import redray as ray


@ray.remote(num_returns=3)
def return_multiple():
    return 1, 2, 3


one_ref = return_multiple.remote()
print(ray.get(one_ref))  # [1, 2, 3]

first_ref, second_ref, third_ref = return_multiple.remote()
print(ray.get(first_ref), ray.get(second_ref), ray.get(third_ref))  # 1 2 3
