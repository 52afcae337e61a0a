"""A fresh in-process AWS per test without building it per test.

Building arkflow's tables, queues and bucket through the API (`devstack.bootstrap`), then seeding users and models,
takes about half a second of every test that asks for it, and some five hundred do. The first such test of a
process builds the state through the API as before; moto's backends are then pickled, and every later test gets
an unpickled copy of them instead: the same state, owned by that test alone (`mock_aws` has reset everything else).
"""

from __future__ import annotations

import copyreg
import os
import pickle
import threading
from collections.abc import Callable, Iterable

from moto.core.base_backend import BackendDict

# moto's queues hold locks, which pickle refuses: a copy gets fresh ones (no test holds a lock across the copy).
copyreg.pickle(type(threading.RLock()), lambda _lock: (threading.RLock, ()))
copyreg.pickle(type(threading.Lock()), lambda _lock: (threading.Lock, ()))

# What names the resources (prefix, region) and what a seeded account's password hash is made with. Tests set
# other variables per test (the simulator's port, say) that the state does not depend on.
STATE_VARIABLES = ("ARKFLOW_PREFIX", "AWS_DEFAULT_REGION", "PASSWORD_HASH_TIME_COST", "PASSWORD_HASH_MEMORY_KIB")
# name -> where each backend lives (its service's BackendDict, account, region) and the backends, pickled together
_snapshots: dict[str, tuple[list[tuple[BackendDict, str, str]], bytes]] = {}


def fresh_state(name: str, build: Callable[[], None], *, depends_on: Iterable[object] = ()) -> None:
    """Inside an active `mock_aws`, with its backends just reset: the state `build()` makes, built once per
    process under `name`, the settings that name the resources and shape what is seeded (`STATE_VARIABLES`) and
    `depends_on`, and restored from its copy afterwards."""
    key = repr((name, [os.environ.get(variable) for variable in STATE_VARIABLES], list(depends_on)))
    snapshot = _snapshots.get(key)
    if snapshot is None:
        build()
        _snapshots[key] = _capture()
        return
    places, blob = snapshot
    for (backend_dict, account, region), backend in zip(places, pickle.loads(blob), strict=True):  # noqa: S301
        backend_dict[account][region] = backend


def _capture() -> tuple[list[tuple[BackendDict, str, str]], bytes]:
    places, backends = [], []
    for backend_dict in BackendDict._instances:
        for account, region, backend in backend_dict.iter_backends():
            places.append((backend_dict, account, region))
            backends.append(backend)
    return places, pickle.dumps(backends)
