"""Cancelling a task with ``ray.cancel`` (seed: "Ray Tasks", cancel_job.py).

Cancelled right after it is submitted, the task has usually not started: it
is taken out of the queue and never runs. Had it started, ``ray.cancel``
would interrupt it (``KeyboardInterrupt`` inside the task), as Ray does.
Either way ``ray.get`` raises ``TaskCancelledError``.
"""

import time

import redray as ray


@ray.remote
def too_long_sleep():
    time.sleep(10e6)


obj_ref = too_long_sleep.remote()
ray.cancel(obj_ref)

try:
    res = ray.get(obj_ref)
except ray.exceptions.TaskCancelledError:
    print("Object reference was cancelled.")
