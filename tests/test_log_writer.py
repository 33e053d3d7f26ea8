"""The log writer thread (softswitch.logs.LogWriter): the loop never waits for the log's disk."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Iterator

import pytest

from softswitch.logs import LogWriter


class StuckStream(io.StringIO):
    """A destination that blocks every write until released (a disk flushing, a full pipe)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.writing = threading.Event()

    def write(self, text: str) -> int:
        self.writing.set()
        self.release.wait(10)
        return super().write(text)


def logger_for(handler: logging.Handler, name: str) -> logging.Logger:
    log = logging.getLogger(f"test_log_writer.{name}")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log


@pytest.fixture
def writers() -> Iterator[list[LogWriter]]:
    made: list[LogWriter] = []
    yield made
    for writer in made:
        writer.close()


def test_lines_are_written_in_order_by_the_thread(writers: list[LogWriter]) -> None:
    stream = io.StringIO()
    writer = LogWriter(stream, interval=0.005)
    writers.append(writer)
    log = logger_for(writer, "order")
    for i in range(500):
        log.info("line %d", i)
    deadline = time.monotonic() + 5
    while stream.getvalue().count("\n") < 500 and time.monotonic() < deadline:
        time.sleep(0.005)  # no flush(): the thread writes on its own
    assert stream.getvalue().splitlines() == [f"line {i}" for i in range(500)]


def test_a_stuck_destination_costs_lines_not_time(writers: list[LogWriter]) -> None:
    stream = StuckStream()
    writer = LogWriter(stream, capacity=100, interval=0.005)
    writers.append(writer)
    writer.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logger_for(writer, "stuck")
    log.info("first")
    assert stream.writing.wait(5)  # the thread is now inside a write that does not return
    started = time.monotonic()
    for i in range(1000):
        log.info("line %d", i)
    assert time.monotonic() - started < 1.0  # nothing waited for the disk
    assert writer.dropped == 900
    stream.release.set()
    writer.flush()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "INFO first"
    assert lines[1:101] == [f"INFO line {i}" for i in range(100)]
    assert lines[101:] == [
        "WARNING 900 log lines dropped: their destination (file, pipe or journal) took lines "
        "more slowly than the node wrote them"
    ]


def test_close_writes_everything_queued_and_ends_the_thread() -> None:
    stream = io.StringIO()
    writer = LogWriter(stream, interval=60.0)  # the thread would not write for a minute
    log = logger_for(writer, "close")
    log.warning("last words")
    writer.close()
    assert stream.getvalue() == "last words\n"
    assert not writer._thread.is_alive()
