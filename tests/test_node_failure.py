"""A node killed with SIGKILL mid-workload: another node finishes its work."""

from __future__ import annotations

import time

import redray


@redray.remote
def slow_square(x: int) -> tuple[int, str]:
    time.sleep(1.0)
    return x * x, redray.get_runtime_context().get_node_id()


# a call sent just before the node died may already have been delivered to
# the dead process (as in Ray), so it needs a retry budget to survive
@redray.remote(max_restarts=1, max_task_retries=1)
class Keeper:
    def __init__(self) -> None:
        self.node = redray.get_runtime_context().get_node_id()

    def where(self) -> str:
        return self.node


def test_work_of_a_killed_node_finishes_on_another(settings, node_factory, connect):
    fast = {"node_timeout": 2.0}
    doomed = node_factory(num_cpus=2, config=fast)
    connect()
    refs = [slow_square.remote(i) for i in range(6)]
    # let the doomed node claim the first tasks, then kill it and all its executors
    deadline = time.monotonic() + 10
    client = settings.client()
    while not client.hlen(redray.api.current_runtime().keys.node_running(doomed.node_id)):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    survivor = node_factory(num_cpus=2, config=fast)
    doomed.kill()
    results = redray.get(refs, timeout=60)
    assert [r[0] for r in results] == [i * i for i in range(6)]
    assert {r[1] for r in results[:2]} == {survivor.node_id}
    assert doomed.node_id not in {n["NodeID"] for n in redray.nodes()}


def test_actor_of_a_killed_node_restarts_on_another(settings, node_factory, connect):
    fast = {"node_timeout": 2.0}
    doomed = node_factory(num_cpus=1, resources={"home": 1}, config=fast)
    connect()
    keeper = Keeper.options(resources={"home": 0.5}).remote()
    assert redray.get(keeper.where.remote(), timeout=30) == doomed.node_id
    survivor = node_factory(num_cpus=1, resources={"home": 1}, config=fast)
    doomed.kill()
    assert redray.get(keeper.where.remote(), timeout=60) == survivor.node_id


@redray.remote
def long_task(log: str, seconds: float) -> str:
    with open(log, "a") as f:
        f.write("run\n")
    time.sleep(seconds)
    return "done"


def test_a_task_longer_than_the_node_timeout_is_never_handed_out_twice(
    settings, node_factory, connect, tmp_path
):
    # the claim is held by the node's heartbeat (every second), not by a
    # visibility timeout: a task twice as long as the timeout runs once
    fast = {"node_timeout": 3.0}
    node_factory(num_cpus=1, config=fast)
    node_factory(num_cpus=1, config=fast)
    connect()
    log = tmp_path / "runs"
    assert redray.get(long_task.remote(str(log), 6.0), timeout=30) == "done"
    assert log.read_text() == "run\n"
