"""What a long-lived object holds: the size of every container reachable from it.

A leak in a switch is nearly always a container that gains an entry per call and never loses
it (a dict keyed by Call-ID, leg or transaction, a heap of timers, a list of events). The
memory tests run batches of whole calls and compare, between batches, :func:`census` (the
total length of the containers at each attribute path, found breadth first from the node
through the project's own objects) and :func:`object_counts` (the live objects of each of the
project's types, from the garbage collector), after :func:`clear_caches` has emptied the
parse caches that are bounded by design.
"""

from __future__ import annotations

import gc
import sys
from collections import Counter, deque
from collections.abc import Iterable, MutableMapping
from typing import Any

from softswitch.sip import transaction as txl

PROJECT = ("softswitch", "media")


def _module(cls: type) -> str:
    module = cls.__dict__.get("__module__", getattr(cls, "__module__", ""))
    return module if isinstance(module, str) else ""


def _ours(obj: object) -> bool:
    return (
        _module(type(obj)).startswith(PROJECT) and not isinstance(obj, type) and not callable(obj)
    )


def _attributes(obj: object) -> Iterable[tuple[str, object]]:
    seen: set[str] = set()
    for name, value in getattr(obj, "__dict__", {}).items():
        seen.add(name)
        yield name, value
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if name not in seen and hasattr(obj, name):
                seen.add(name)
                yield name, getattr(obj, name)


def census(root: object, *, skip: Iterable[str] = ()) -> Counter[str]:
    """Total length of the containers at each path from ``root`` (``Node.calls._heap``;
    members of containers are ``[*]``, so per-call objects add up under one path).

    Only the project's objects are followed (not config values, not library objects);
    attributes named in ``skip`` are not entered.
    """
    skipped = set(skip)
    sizes: Counter[str] = Counter()
    seen: set[int] = set()
    queue: deque[tuple[object, str]] = deque([(root, type(root).__name__)])
    while queue:
        obj, path = queue.popleft()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            sizes[path] += len(obj)
            queue.extend((value, path + "[*]") for value in obj.values())
        elif isinstance(obj, list | set | frozenset | deque | tuple):
            if not isinstance(obj, tuple):
                sizes[path] += len(obj)
            queue.extend((value, path + "[*]") for value in obj)
        elif _ours(obj):
            for name, value in _attributes(obj):
                if name not in skipped:
                    queue.append((value, f"{path}.{name}"))
    return sizes


def object_counts() -> Counter[str]:
    """Live objects of each of the project's types (garbage collected first)."""
    gc.collect()
    counts: Counter[str] = Counter()
    for obj in gc.get_objects():
        module = _module(type(obj))
        if module.startswith(PROJECT):
            counts[f"{module}.{type(obj).__qualname__}"] += 1
    return counts


def clear_caches(*extra: MutableMapping[Any, Any]) -> None:
    """Empty the caches bounded by design: every ``functools.lru_cache`` of the project's
    imported modules, the transaction layer's tagged-To cache, and ``extra`` (an endpoint's
    Via cache, say)."""
    for name, module in list(sys.modules.items()):
        if not name.startswith(PROJECT) or module is None:
            continue
        for value in vars(module).values():
            clear = getattr(value, "cache_clear", None)
            if clear is not None and getattr(value, "__module__", "") == name:
                clear()
    txl._TAGGED_TO.clear()
    for cache in extra:
        cache.clear()


def grown(before: Counter[str], after: Counter[str], limit: int) -> dict[str, tuple[int, int]]:
    """The keys that grew by more than ``limit``: key -> (before, after)."""
    return {key: (before[key], after[key]) for key in after if after[key] - before[key] > limit}
