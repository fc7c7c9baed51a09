"""The bento on a core of its own, as deployed, for the concurrency-1 latency measurement.

On this 2-core machine the bento's model, the selector, the floors and the client all share
both cores: while the model runs, it evicts what the selector's worker had in the CPU caches,
so the worker meets each request cold (scripts/benchmarks/cold_handler.py: two to three times
the hot cost). Deployed, the model runs in a pod of its own (`rollout deploy kubernetes`: a
Deployment per bento version), on CPU the selector does not share. `own_core` pins every
thread of the bento's process tree to the last CPU this process may use, and everything else
(the selector, the floors, this client) to the others; afterwards every thread gets all of
them back.

It is a second row beside the shared one, never instead of it: the targets are printed for
both, and the shared machine's figures stay the headline.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator

import psutil


@contextlib.contextmanager
def own_core(bento_pid: int, other_pids: Iterable[int]) -> Iterator[bool]:
    """Pin the bento's processes to one CPU and the rest to the others; yields False (pinning
    nothing) on a machine with a single CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        yield False
        return
    everything = set(cpus)
    groups = [(bento_pid, {cpus[-1]}), *((pid, set(cpus[:-1])) for pid in other_pids)]
    groups.append((os.getpid(), set(cpus[:-1])))
    try:
        for pid, chosen in groups:
            _set(_threads(pid), chosen)
        yield True
    finally:
        for pid, _ in groups:
            _set(_threads(pid), everything)


def _threads(pid: int) -> list[int]:
    """Every thread id of `pid` and its descendants (threads started later inherit the mask)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    ids: list[int] = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            ids += [thread.id for thread in process.threads()]
    return ids


def _set(thread_ids: list[int], cpus: set[int]) -> None:
    for thread_id in thread_ids:
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(thread_id, cpus)
