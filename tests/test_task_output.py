"""What tasks and actors print reaches the driver that owns them, prefixed as
Ray prefixes it, from real worker processes; ``redray logs`` reads it back.

The drivers are real processes whose stdout and stderr the tests read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import run_cli, run_python

from redray.constants import Keys
from redray.log_stream import Dedup, Line
from redray.settings import Settings
from redray.workers import output

DRIVER = """
import logging, sys, redray
redray.init(address=sys.argv[1]{init_args})

@redray.remote
def shout(i):
    print("out line", i)
    print("err line", i, file=sys.stderr)
    logging.getLogger("user.module").warning("a log record %d", i)
    return i

@redray.remote
class Speaker:
    def speak(self):
        print("the actor speaks")
        return 1

assert redray.get(shout.remote(1), timeout=60) == 1
assert redray.get(Speaker.remote().speak.remote(), timeout=60) == 1
print("JOB", redray.get_runtime_context().get_job_id())
redray.shutdown()
"""


def run_driver(settings: Settings, tmp_path: Path, init_args: str = "") -> Any:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(init_args=init_args))
    done = run_python(str(script), settings.to_url())
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture
def printed(settings: Settings, node_factory: Any, tmp_path: Path) -> Any:
    """The output of a driver whose task and actor printed."""
    node_factory(num_cpus=2)
    return run_driver(settings, tmp_path)


def test_a_tasks_print_reaches_the_drivers_stdout_with_rays_prefix(printed: Any) -> None:
    assert re.search(r"^\(shout pid=\d+\) out line 1$", printed.stdout, re.M)


def test_a_tasks_stderr_reaches_the_drivers_stderr(printed: Any) -> None:
    assert re.search(r"^\(shout pid=\d+\) err line 1$", printed.stderr, re.M)
    assert "err line" not in printed.stdout


def test_logging_in_a_task_reaches_the_driver_under_the_tasks_prefix(printed: Any) -> None:
    assert re.search(
        r"^\(shout pid=\d+\) WARNING:user.module:a log record 1$", printed.stderr, re.M
    )
    assert "(redray node)" not in printed.stderr


def test_an_actors_print_is_prefixed_with_its_class_name(printed: Any) -> None:
    assert re.search(r"^\(Speaker pid=\d+\) the actor speaks$", printed.stdout, re.M)


def test_log_to_driver_false_prints_nothing_of_the_tasks(
    settings: Settings, node_factory: Any, tmp_path: Path
) -> None:
    node_factory(num_cpus=2)
    done = run_driver(settings, tmp_path, ", log_to_driver=False")
    assert "out line" not in done.stdout + done.stderr
    assert "the actor speaks" not in done.stdout


def test_redray_logs_reads_a_jobs_output_afterwards(
    settings: Settings, node_factory: Any, tmp_path: Path
) -> None:
    node_factory(num_cpus=2)
    done = run_driver(settings, tmp_path, ", log_to_driver=False")
    job_id = re.search(r"^JOB (\w+)$", done.stdout, re.M).group(1)  # type: ignore[union-attr]
    shown = run_cli("logs", job_id, "--address", settings.to_url())
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^\(shout pid=\d+\) out line 1$", shown.stdout, re.M)
    assert re.search(r"^\(Speaker pid=\d+\) the actor speaks$", shown.stdout, re.M)


def test_a_finished_jobs_output_is_kept_a_while_not_for_ever(
    settings: Settings, node_factory: Any, tmp_path: Path, redis_client: redis.Redis
) -> None:
    node_factory(num_cpus=2)
    done = run_driver(settings, tmp_path)
    job_id = re.search(r"^JOB (\w+)$", done.stdout, re.M).group(1)  # type: ignore[union-attr]
    ttl = redis_client.ttl(Keys(settings.prefix).job_logs(job_id))
    assert 0 < ttl <= 600


# -- the pieces, in-process --------------------------------------------------------------------


def test_a_job_log_stream_is_capped_while_the_job_runs(
    redis_client: redis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "STREAM_MAXLEN", 100)
    capture = output.Capture(redis_client, Keys(settings.prefix), "node-x")
    capture.task_started("capjob", "f", "task-1")
    for i in range(1000):
        capture.write("out", f"line {i}\n")
        if i % 100 == 0:
            capture._send()
    capture._send()
    key = Keys(settings.prefix).job_logs("capjob")
    try:
        # approximate trimming keeps at most one stream node more than the cap
        assert redis_client.xlen(key) <= 300
        assert redis_client.ttl(key) > 0
    finally:
        redis_client.delete(key)


def test_output_outside_a_task_stays_out_of_redis(
    redis_client: redis.Redis, settings: Settings
) -> None:
    capture = output.Capture(redis_client, Keys(settings.prefix), "node-x")
    capture.write("out", "the executor's own line\n")
    assert not capture._lines


def test_the_prefix_names_the_ip_of_a_node_on_another_machine() -> None:
    line = Line(kind="out", name="f", pid="12", ip="10.0.0.2", text="hi")
    assert line.prefix(here="10.0.0.1") == "(f pid=12, ip=10.0.0.2)"
    assert line.prefix(here="10.0.0.2") == "(f pid=12)"


def test_dedup_holds_back_a_line_other_processes_repeat_and_counts_them() -> None:
    dedup = Dedup(window=5.0)
    lines = [Line("out", "f", str(pid), "", f"step {pid}") for pid in (1, 2, 3)]
    shown = [dedup.feed(line, now=0.0) for line in lines]
    assert shown == [True, False, False]
    assert dedup.expired(now=1.0) == []
    [(last, count)] = dedup.expired(now=5.0)
    assert count == 2 and last.pid == "3"


def test_dedup_shows_one_processes_own_repeats() -> None:
    dedup = Dedup(window=5.0)
    assert all(dedup.feed(Line("out", "f", "1", "", "tick"), now=0.0) for _ in range(3))


def test_dedup_never_holds_back_lines_of_only_numbers() -> None:
    dedup = Dedup(window=5.0)
    assert all(dedup.feed(Line("out", "f", str(p), "", "42"), now=0.0) for p in (1, 2))
