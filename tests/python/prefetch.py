"""Prefetcher (examples/torch_consumer.py): order kept, bounded read-ahead, errors raised at
the item where they happened, early exit stops the background thread."""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
from torch_consumer import Prefetcher  # noqa: E402

# Order kept, everything delivered.
assert list(Prefetcher(iter(range(1000)), 3)) == list(range(1000))

# Read-ahead is bounded: with nobody consuming, the source is pulled at most depth + 1 times
# (depth queued, one held by the blocked put).
pulled = []


def source():
    for i in range(100):
        pulled.append(i)
        yield i


it = iter(Prefetcher(source(), 2))
assert next(it) == 0
deadline = time.monotonic() + 5
while len(pulled) < 4 and time.monotonic() < deadline:
    time.sleep(0.01)
time.sleep(0.2)
assert len(pulled) <= 4, pulled


# An error in the source is raised after the items before it.
def failing():
    yield 1
    yield 2
    raise ValueError("boom")


got = []
try:
    for x in Prefetcher(failing(), 2):
        got.append(x)
    raise AssertionError("no error raised")
except ValueError as e:
    assert str(e) == "boom" and got == [1, 2], (e, got)

# Leaving early stops the thread.
before = threading.active_count()
for x in Prefetcher(iter(range(10**9)), 2):
    if x == 5:
        break
it.close()
deadline = time.monotonic() + 5
while threading.active_count() > before - 1 and time.monotonic() < deadline:
    time.sleep(0.01)
assert threading.active_count() <= before - 1, threading.enumerate()
print("prefetch ok")
