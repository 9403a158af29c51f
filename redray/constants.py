"""Every Redis key and channel redray uses, built in one place.

All keys of one cluster share the hash tag ``{<prefix>}`` today, so that every
Lua call, which may touch task, node and object keys together, stays inside one
Redis Cluster slot. Scheduling state is built per *shard* (``Keys.shard_tag``)
so that a later change can give each shard a tag of its own (architecture.md,
section 12.9). ``docs/architecture.md`` documents each key: type, writer,
reader and when it is deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

DEFAULT_PREFIX = "redray"

#: Resource quantities are stored as integers in units of 1e-4 (Ray's precision).
RESOURCE_UNIT = 10_000

#: Values up to this size are inlined in task specs and result notifications.
INLINE_LIMIT = 100 * 1024

#: Largest single Redis value redray writes; bigger buffers are split into pieces.
PIECE_LIMIT = 256 * 1024 * 1024

#: The dead-letter stream keeps about this many entries (XADD MAXLEN ~).
MAX_DEAD_LETTERS = 10_000

#: The task-event stream keeps about this many entries (XADD MAXLEN ~), all jobs together.
MAX_TASK_EVENTS = 10_000

#: Largest runtime_env ``working_dir`` or ``py_modules`` entry, as Ray's 500 MiB
#: (the files' total size, and the zip's).
MAX_PACKAGE_BYTES = 500 * 1024 * 1024

#: Where ``redray start`` records the address of the cluster it started.
ADDRESS_FILE_NAME = "redray_current_cluster"
#: Beside it: the secret of the cluster `redray start --head` started (0600).
SECRET_FILE_NAME = "redray_cluster_secret"
#: Beside it: the URL of the dashboard `redray start --head` started.
DASHBOARD_FILE_NAME = "redray_dashboard_url"
#: Where a dashboard listens unless told otherwise (Ray's port).
DASHBOARD_HOST = "127.0.0.1"
DASHBOARD_PORT = 8265


@dataclass(frozen=True)
class Keys:
    """Key builder for one cluster, identified by its prefix."""

    prefix: str = DEFAULT_PREFIX

    @cached_property
    def tag(self) -> str:
        """The hash tag of the cluster-wide registry keys."""
        return "{" + self.prefix + "}"

    @cached_property
    def shard_tag(self) -> str:
        """The hash tag of the (one, today) scheduling shard."""
        return self.tag

    # -- scheduling (per shard) ------------------------------------------------------
    @property
    def task_spec(self) -> str:
        """HASH task id -> serialized task spec, while the task is unfinished."""
        return f"{self.shard_tag}:task:spec"

    @property
    def task_state(self) -> str:
        """HASH task id -> 'W<shape>' waiting, 'Q<member>' queued, 'R<node> <worker>[ c]'
        running (' c': cancel() reached it), 'C' cancelled before it ran."""
        return f"{self.shard_tag}:task:state"

    @property
    def deps_left(self) -> str:
        """HASH task id -> its missing inputs, ' <oid> <oid> ... ' (a set: idempotent)."""
        return f"{self.shard_tag}:task:deps"

    @property
    def ready(self) -> str:
        """ZSET of ready tasks, members '<shape>|<seq>|<task id>', all score 0."""
        return f"{self.shard_tag}:ready"

    @property
    def retries(self) -> str:
        """HASH task id -> times the task was re-queued after losing its executor."""
        return f"{self.shard_tag}:task:retries"

    @property
    def seq(self) -> str:
        """STRING counter ordering ready tasks first-in first-out."""
        return f"{self.shard_tag}:seq"

    def bell(self, shape: str) -> str:
        """LIST one token per queued task of the shape: idle executors BLPOP it."""
        return f"{self.shard_tag}:bell:{shape}"

    def submitted(self, worker_id: str) -> str:
        """STRING the highest submission number of ``worker_id`` applied (re-sends skip)."""
        return f"{self.shard_tag}:sub:{worker_id}"

    def claim(self, worker_id: str) -> str:
        """STRING the task an executor claimed and has not finished."""
        return f"{self.shard_tag}:exec:{worker_id}"

    def executor_wake(self, worker_id: str) -> str:
        """LIST an executor's own wake token (``s``: a new shape was registered)."""
        return f"{self.shard_tag}:exec:{worker_id}:wake"

    # -- cluster registry ----------------------------------------------------------
    @property
    def shapes(self) -> str:
        """HASH resource shape -> 1, every shape ever submitted."""
        return f"{self.tag}:shapes"

    @property
    def nodes(self) -> str:
        """HASH node id -> JSON node info (address, totals, pid)."""
        return f"{self.tag}:nodes"

    @property
    def heartbeats(self) -> str:
        """ZSET node id -> last heartbeat (Redis server time, milliseconds)."""
        return f"{self.tag}:heartbeats"

    @property
    def jobs(self) -> str:
        """HASH job id -> JSON job info, while the job's driver is connected."""
        return f"{self.tag}:jobs"

    @property
    def job_beats(self) -> str:
        """ZSET job id -> last heartbeat of its driver (Redis server time, ms)."""
        return f"{self.tag}:jobbeats"

    def lock(self, what: str) -> str:
        """STRING fenced lock (a random token, PX) held while reaping ``what``."""
        return f"{self.tag}:lock:{what}"

    @property
    def dead_letters(self) -> str:
        """STREAM (capped) malformed items redray dropped, with the reason (dead_letters.py)."""
        return f"{self.tag}:deadletters"

    @property
    def task_events(self) -> str:
        """LIST (capped) one JSON record per task that ended, newest last: the
        state API's record of finished and failed tasks (task_events.py)."""
        return f"{self.tag}:task:ended"

    @property
    def job_counter(self) -> str:
        """STRING counter that numbers jobs."""
        return f"{self.tag}:jobcounter"

    # -- per node ----------------------------------------------------------------
    def node_avail(self, node_id: str) -> str:
        """HASH resource -> available units on one node."""
        return f"{self.tag}:node:{node_id}:avail"

    def node_gpus(self, node_id: str) -> str:
        """HASH GPU index -> available units of that device."""
        return f"{self.tag}:node:{node_id}:gpus"

    def node_running(self, node_id: str) -> str:
        """HASH task id -> '<executor> <reservation> <CPU units given back while blocked>'."""
        return f"{self.tag}:node:{node_id}:running"

    def node_wake(self, node_id: str) -> str:
        """LIST wake tokens for the node's idle executors (resources freed, memory back)."""
        return f"{self.tag}:node:{node_id}:wake"

    def node_control(self, node_id: str) -> str:
        """STREAM kill/cancel requests for the node's agent."""
        return f"{self.tag}:node:{node_id}:ctl"

    def node_workers(self, node_id: str) -> str:
        """SET the ids of the node's live executors (their keys go when the node does)."""
        return f"{self.tag}:node:{node_id}:workers"

    def node_ready(self, node_id: str) -> str:
        """LIST pushed once by a node agent when its executors may claim work."""
        return f"{self.tag}:node:{node_id}:up"

    # -- per job -----------------------------------------------------------------
    def job_keys(self, job_id: str) -> str:
        """SET of every object/function/list key the job created, for cleanup."""
        return f"{self.tag}:job:{job_id}:keys"

    def job_logs(self, job_id: str) -> str:
        """STREAM what the job's tasks and actors printed (capped, expiring)."""
        return f"{self.tag}:job:{job_id}:logs"

    def job_tasks(self, job_id: str) -> str:
        """SET of the job's unfinished task ids, for cleanup."""
        return f"{self.tag}:job:{job_id}:tasks"

    def function(self, job_id: str, digest: str) -> str:
        """STRING cloudpickled function, named by its content hash."""
        return f"{self.tag}:fn:{job_id}:{digest}"

    def package(self, job_id: str, digest: str) -> str:
        """STRING a runtime_env ``working_dir``/``py_modules`` zip (signed), named
        by the SHA-256 of the zip."""
        return f"{self.tag}:pkg:{job_id}:{digest}"

    # -- per object --------------------------------------------------------------
    def obj(self, object_id: str) -> str:
        """HASH the object's payload; its existence means the object is ready."""
        return f"{self.tag}:obj:{object_id}"

    def staged(self, object_id: str, attempt: str) -> str:
        """HASH a large result written before its publish decides to keep it."""
        return f"{self.tag}:obj:{object_id}:s{attempt}"

    def waiters(self, object_id: str) -> str:
        """SET task ids (and '@<worker>' borrowers) waiting for the object."""
        return f"{self.tag}:wait:{object_id}"

    def done(self, object_id: str) -> str:
        """LIST one token per borrower subscribed when the object was produced."""
        return f"{self.tag}:done:{object_id}"

    # -- actors --------------------------------------------------------------------
    @property
    def actor_names(self) -> str:
        """HASH '<namespace>:<name>' -> actor id, for live named actors."""
        return f"{self.tag}:actornames"

    @property
    def actors(self) -> str:
        """SET every actor id that is not dead yet, for listings."""
        return f"{self.tag}:actors"

    def actor(self, actor_id: str) -> str:
        """HASH one actor: state, class, name, placement, creation task, death record."""
        return f"{self.tag}:actor:{actor_id}"

    def mailbox(self, actor_id: str) -> str:
        """STREAM the actor's method calls (consumer group 'actor')."""
        return f"{self.tag}:actor:{actor_id}:mbox"

    def actor_cancelled(self, actor_id: str) -> str:
        """SET task ids of the actor's calls that cancel() reached, until they end."""
        return f"{self.tag}:actor:{actor_id}:cancel"

    def job_actors(self, job_id: str) -> str:
        """SET the job's non-detached actor ids, killed when the job ends."""
        return f"{self.tag}:job:{job_id}:actors"

    # -- util.queue.Queue -------------------------------------------------------------
    def queue(self, queue_id: str) -> str:
        """LIST a Queue's items, oldest first."""
        return f"{self.tag}:queue:{queue_id}"

    def queue_free(self, queue_id: str) -> str:
        """LIST one token per free slot of a bounded Queue."""
        return f"{self.tag}:queue:{queue_id}:free"

    def queue_meta(self, queue_id: str) -> str:
        """STRING a Queue's maxsize; its existence says the queue is not shut down."""
        return f"{self.tag}:queue:{queue_id}:meta"

    # -- per worker process ------------------------------------------------------
    def inbox(self, worker_id: str) -> str:
        """LIST completion notices for the tasks a driver or executor submitted."""
        return f"{self.tag}:inbox:{worker_id}"

    @property
    def nothing(self) -> str:
        """A key no script writes: passed where a script's optional key is absent."""
        return f"{self.tag}:-"

    # -- pub/sub channels (not keys; wake-ups only, never the only copy) --------------
    def actor_channel(self, actor_id: str) -> str:
        """Where an actor hears 'cancel <task id>' (the actor's cancel set is the copy)."""
        return f"{self.tag}:ch:actor:{actor_id}"


#: Consumer group every actor mailbox has.
MAILBOX_GROUP = "actor"
