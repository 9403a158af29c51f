"""A task blocked in ``ray.get`` gives its CPU back (seed 002, "release resources while blocked").

The cluster has a single CPU. ``g`` holds it while it runs, then waits for
``f``, which needs a CPU too: this finishes only because ``g`` releases its
CPU while it is blocked in ``ray.get`` and takes it back afterwards. (The
guide's ``g`` also asks for a GPU; that is left out so the example runs on
any machine. GPUs are not released while blocked.)
"""

import redray as ray

ray.init(num_cpus=1)


@ray.remote(num_cpus=1)
def f():
    return "f ran while g was blocked"


@ray.remote(num_cpus=1)
def g():
    return ray.get(f.remote())


print(ray.get(g.remote(), timeout=60))
