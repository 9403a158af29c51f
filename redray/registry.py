"""What a process uploads once: its functions (per job) and resource shapes.

Functions are remembered per function *object*, weakly, never by ``id()``:
Python reuses a freed object's address, so an ``id``-keyed cache runs the
code of a function that no longer exists (200 ``remote(lambda i=i: i)`` made
in a loop gave 192 wrong results that way).
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable
from typing import Any

import redis

from . import code_pickle
from .connections import connection_error
from .constants import Keys
from .identity import Identity
from .infeasible import InfeasibleShapes, node_totals
from .scripts import Scripts
from .settings import Settings
from .signing import FUNCTION, Signer


class Registry:
    def __init__(
        self,
        settings: Settings,
        keys: Keys,
        client: redis.Redis,
        scripts: Scripts,
        identity: Identity,
        signer: Signer,
    ) -> None:
        self.settings = settings
        self.signer = signer
        self.keys = keys
        self.client = client
        self.scripts = scripts
        self.identity = identity
        #: function or class -> {job id: (key, digest)}
        self._functions: weakref.WeakKeyDictionary[Any, dict[str, tuple[str, str]]] = (
            weakref.WeakKeyDictionary()
        )
        #: the same for objects that cannot be weakly referenced (kept alive,
        #: so their id cannot be reused while listed)
        self._pinned: dict[int, tuple[Any, dict[str, tuple[str, str]]]] = {}
        self._known_shapes: set[str] = set()
        self.infeasible = InfeasibleShapes(client, keys)

    def _uploads(self, fn: Any) -> dict[str, tuple[str, str]]:
        try:
            return self._functions.setdefault(fn, {})
        except TypeError:  # not weakly referenceable
            return self._pinned.setdefault(id(fn), (fn, {}))[1]

    def function_key(self, fn: Callable[..., Any] | type, name: str) -> tuple[str, str]:
        """Upload a function (or actor class) once per job; returns (key, digest)."""
        job_id = self.identity.job_id
        uploads = self._uploads(fn)
        known = uploads.get(job_id)
        if known is not None:
            return known
        try:
            blob = code_pickle.dumps(fn)
        except Exception as exc:
            raise TypeError(
                f"Could not serialize the function {name}: {exc!r}. A remote function must be "
                "picklable by cloudpickle (no open files, locks or sockets in its closure)."
            ) from exc
        digest = hashlib.sha1(blob).hexdigest()
        key = self.keys.function(job_id, digest)
        sealed = self.signer.seal(FUNCTION, key, blob)

        def upload() -> None:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.set(key, sealed, nx=True)
                pipe.sadd(self.keys.job_keys(job_id), key)
                pipe.execute()

        try:
            upload()
        except redis.ConnectionError as exc:
            raise connection_error(self.settings, exc) from exc
        uploads[job_id] = (key, digest)
        return key, digest

    def check_shape(self, shape: str, what: str) -> None:
        """Register a new resource shape (executors then listen to its bell);
        warn once if no node can ever fit it."""
        if shape in self._known_shapes:
            return
        try:
            new, raw = self.scripts.register_shape(shape)
            if new:
                self.scripts.wake_for_shape([n.decode(errors="replace") for n in raw])
        except redis.ConnectionError as exc:
            raise connection_error(self.settings, exc) from exc
        self._known_shapes.add(shape)
        self.infeasible.first_sight(shape, node_totals(raw), what)
