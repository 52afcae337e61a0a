"""Sparse mark indexes of the tasks table: a mark that a task's write left for a listener, which the sweeper takes
over when the listener did not take it off (`chalicelib.webhooks.outbox`). The metrics' marks have no listener: the
sweeper's roll-up reads them all (`chalicelib.metrics.rollup.marked`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from chalicelib.store.records import TaskRecord


def marked_before(index: Any, shards: Iterable[str], mark: Any, cutoff: float, page: int) -> Iterator[TaskRecord]:
    """Tasks of the mark `index` whose `mark` is at most `cutoff`, oldest first per shard, `page` of them at most."""
    left = page
    for shard in shards:
        for task in index.query(shard, mark <= cutoff, limit=left):
            yield task
            left -= 1
            if left <= 0:
                return
