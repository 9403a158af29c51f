"""The per-process reference table: which objects to free, and when (pure logic)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from redray.reference_table import ReferenceTable

REPO_ROOT = Path(__file__).resolve().parent.parent

HELD = (b"v", [b"frames"])


def test_owned_object_freed_when_last_ref_removed() -> None:
    t = ReferenceTable()
    t.own(["o1"], ready=True)
    t.add_local("o1")
    t.add_local("o1")
    t.remove_local("o1")
    assert t.to_free == [] and t.is_owned("o1")
    t.remove_local("o1")
    assert t.take_to_free() == ["o1"]
    assert not t.is_owned("o1") and not t.is_ready("o1")
    assert "o1" not in t.counts
    assert t.take_to_free() == []


def test_freeing_drops_held_value() -> None:
    t = ReferenceTable()
    t.own(["o1"])
    t.add_local("o1")
    t.mark_ready("o1", HELD)
    assert t.is_ready("o1") and t.held["o1"] == HELD
    t.remove_local("o1")
    assert "o1" not in t.held
    assert t.take_to_free() == ["o1"]


def test_collected_refs_are_applied_at_the_next_take() -> None:
    t = ReferenceTable()
    oids = [f"o{i}" for i in range(3)]
    t.own(oids, ready=True)
    for oid in oids:
        t.add_local(oid)
    for oid in oids:
        t.release(oid)  # what ObjectRef.__del__ does: no lock taken
    assert t.to_free == []
    assert t.take_to_free() == oids


def test_escaped_object_stays_pinned() -> None:
    t = ReferenceTable()
    t.own(["o1"], ready=True)
    t.add_local("o1")
    t.escape("o1")
    t.remove_local("o1")
    assert t.take_to_free() == []
    assert t.is_owned("o1") and t.is_ready("o1")
    # a new local ref and its removal do not free it either
    t.add_local("o1")
    t.remove_local("o1")
    assert t.take_to_free() == []


def test_escape_of_unowned_object_is_ignored() -> None:
    t = ReferenceTable()
    t.add_local("b1")
    t.escape("b1")
    assert "b1" not in t.escaped


def test_dropped_before_ready_is_freed_on_mark_ready() -> None:
    t = ReferenceTable()
    t.own(["o1"])  # task submitted, result not produced yet
    t.add_local("o1")
    t.remove_local("o1")
    assert t.take_to_free() == []
    assert "o1" in t.free_when_ready
    t.mark_ready("o1", HELD)
    assert t.take_to_free() == ["o1"]
    assert "o1" not in t.held and not t.is_ready("o1") and "o1" not in t.free_when_ready
    # a duplicate notice changes nothing
    t.mark_ready("o1", HELD)
    assert t.take_to_free() == [] and not t.is_ready("o1")


def test_borrowed_object_never_freed() -> None:
    t = ReferenceTable()
    t.add_local("b1")
    t.hold("b1", HELD)
    assert t.is_ready("b1")
    t.mark_ready("b1", HELD)  # a notice for an object we do not own: ignored
    assert "b1" not in t.ready
    t.remove_local("b1")
    assert t.take_to_free() == []
    assert "b1" not in t.held and "b1" not in t.counts
    assert "b1" not in t.free_when_ready


def test_hold_only_while_referenced() -> None:
    t = ReferenceTable()
    t.hold("x", HELD)
    assert "x" not in t.held
    t.add_local("x")
    t.hold("x", HELD)
    assert t.held["x"] == HELD


def test_mark_ready_records_ready_and_value() -> None:
    t = ReferenceTable()
    t.own(["o1", "o2"])
    assert not t.is_ready("o1")
    t.mark_ready("o1", None)
    t.mark_ready("o2", HELD)
    assert t.is_ready("o1") and "o1" not in t.held
    assert t.is_ready("o2") and t.held["o2"] == HELD


def test_forget_all() -> None:
    t = ReferenceTable()
    t.own(["o1", "o2"], ready=True)
    t.add_local("o1")
    t.add_local("o2")
    t.escape("o2")
    t.remove_local("o1")
    t.forget_all()
    assert (t.counts, t.owned, t.escaped, t.ready, t.held, t.to_free) == (
        {},
        set(),
        set(),
        set(),
        {},
        [],
    )
    assert t.free_when_ready == set()


def test_concurrent_add_remove_keeps_counts() -> None:
    t = ReferenceTable()
    oids = [f"o{i}" for i in range(50)]
    t.own(oids, ready=True)
    for oid in oids:
        t.add_local(oid)  # one base ref each, dropped at the end

    def churn() -> None:
        for _ in range(200):
            for oid in oids:
                t.add_local(oid)
                t.remove_local(oid)

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert t.take_to_free() == [] and all(t.counts[o] == 1 for o in oids)
    for oid in oids:
        t.remove_local(oid)
    assert sorted(t.take_to_free()) == sorted(oids)


# -- ObjectRef.__del__ runs at any allocation, inside the table's own lock --------------
#
# These run in a child process: a thread that deadlocks inside a GC pass leaves
# the collector marked busy, which would switch cyclic GC off for the rest of
# the test session.

GC_INSIDE_LOCK = """
import gc, threading
from types import SimpleNamespace
from redray.object_ref import ObjectRef
from redray.reference_table import ReferenceTable

class Table(ReferenceTable):
    def own(self, oids, ready=False):
        with self._lock:
            # a collection can start at any allocation made under the lock
            gc.collect()
        super().own(oids, ready)

t = Table()
runtime = SimpleNamespace(refs=t)
t.own(["b"], ready=True)
gc.disable()
cycle = [ObjectRef("b", runtime)]
cycle.append(cycle)  # only the cycle collector can free this ref
del cycle
th = threading.Thread(target=t.own, args=(["c"],), daemon=True)
th.start()
th.join(5)
gc.enable()
print("DEADLOCK" if th.is_alive() else sorted(t.take_to_free()), flush=True)
"""

GC_CHURN = """
import gc, threading
from types import SimpleNamespace
from redray.object_ref import ObjectRef
from redray.reference_table import ReferenceTable

t = ReferenceTable()
runtime = SimpleNamespace(refs=t)
done = [0]

def churn():
    for i in range(3000):
        t.own([f"a{i}", f"b{i}"], ready=True)
        plain = ObjectRef(f"a{i}", runtime)
        cycle = [ObjectRef(f"b{i}", runtime)]
        cycle.append(cycle)
        del cycle
        del plain
        t.take_to_free()
        done[0] = i + 1

gc.set_threshold(100, 10, 10)
th = threading.Thread(target=churn, daemon=True)
th.start()
th.join(20)
print(f"DEADLOCK after {done[0]} iterations" if th.is_alive() else "OK", flush=True)
"""


def run_child(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_ref_collected_by_gc_inside_table_lock_does_not_deadlock() -> None:
    assert run_child(GC_INSIDE_LOCK) == "['b']"


def test_refs_in_garbage_cycles_do_not_deadlock() -> None:
    assert run_child(GC_CHURN) == "OK"
