"""The clock-free jitter buffer."""

import numpy as np

from media.jitter import CONCEAL_GAINS, FrameRing, JitterBuffer


def _p(n: int) -> bytes:
    return bytes([n % 256]) * 160


def test_waits_for_target_then_plays_in_order_despite_reordering() -> None:
    jb = JitterBuffer(target=3)
    jb.put(11, _p(11))
    assert jb.pop() == (None, 0.0)
    jb.put(10, _p(10))
    jb.put(12, _p(12))
    out = [jb.pop() for _ in range(3)]
    assert out == [(_p(10), 1.0), (_p(11), 1.0), (_p(12), 1.0)]


def test_loss_is_concealed_by_fading_repeat_then_silence() -> None:
    jb = JitterBuffer(target=1)
    jb.put(1, _p(1))
    assert jb.pop() == (_p(1), 1.0)
    outs = [jb.pop() for _ in range(len(CONCEAL_GAINS) + 2)]
    gains = [g for _, g in outs]
    assert gains[: len(CONCEAL_GAINS)] == list(CONCEAL_GAINS)
    assert outs[-1] == (None, 0.0)
    assert jb.concealed == len(CONCEAL_GAINS)


def test_single_gap_then_recovery() -> None:
    jb = JitterBuffer(target=2)
    for s in (1, 2, 4, 5):
        jb.put(s, _p(s))
    assert [jb.pop() for _ in range(4)] == [
        (_p(1), 1.0),
        (_p(2), 1.0),
        (_p(2), CONCEAL_GAINS[0]),
        (_p(4), 1.0),
    ]


def test_late_packet_dropped_and_sequence_wrap() -> None:
    jb = JitterBuffer(target=2)
    jb.put(65535, _p(1))
    jb.put(0, _p(2))
    assert jb.pop() == (_p(1), 1.0)
    assert jb.pop() == (_p(2), 1.0)
    jb.put(65535, _p(9))
    assert jb.late == 1
    jb.put(1, _p(3))
    assert jb.pop() == (_p(3), 1.0)


def test_deep_queue_is_trimmed_and_jump_reprimes() -> None:
    jb = JitterBuffer(target=2, capacity=20)
    for s in range(10):
        jb.put(s, _p(s))
    jb.pop()
    assert jb.dropped == 1
    assert jb.pop() == (_p(2), 1.0)
    jb.put(5000, _p(50))
    assert len(jb) == 1 and jb.next_seq is None
    jb.reset()
    assert jb.pop() == (None, 0.0)


# -- FrameRing: the vectorised receive buffer of detection-only legs ----------------------------


def _ring_packet(seq: int, fill: int) -> bytes:
    return bytes([0x80, 0, seq >> 8 & 0xFF, seq & 0xFF]) + bytes(8) + bytes([fill]) * 160


def _put(ring: FrameRing, row: int, seq: int, fill: int) -> None:
    pos = (seq & (FrameRing.DEPTH - 1)) * FrameRing.SLOT
    ring.row_view(row)[pos : pos + FrameRing.SLOT] = _ring_packet(seq, fill)


def _firsts(frames: np.ndarray) -> list[int]:
    return [int(x) for x in frames[:, 0]]


def test_ring_plays_one_frame_behind_newest_and_reorders() -> None:
    ring = FrameRing([0xFF, 0xD5])
    assert _firsts(ring.pop()) == [0xFF, 0xD5]  # nothing yet: each row's silence
    _put(ring, 0, 65535, 1)
    _put(ring, 1, 100, 7)
    _put(ring, 1, 101, 8)
    # Primed one frame behind the newest: row 0 has nothing before 65535 yet.
    assert _firsts(ring.pop()) == [0xFF, 7]
    _put(ring, 0, 1, 3)  # arrives before 0 (reordered)
    _put(ring, 0, 0, 2)
    _put(ring, 1, 102, 9)
    assert _firsts(ring.pop()) == [1, 8]
    assert _firsts(ring.pop()) == [2, 9]
    assert _firsts(ring.pop()) == [3, 0xD5]  # row 1 missing 103: silence, no repeat


def test_ring_skips_ahead_when_too_deep_and_reprimes_after_sender_stops() -> None:
    ring = FrameRing([0xFF])
    _put(ring, 0, 10, 10)
    _put(ring, 0, 11, 11)
    assert _firsts(ring.pop()) == [10]
    for seq in range(12, 12 + FrameRing.MAX_LAG + 2):  # a burst: queue deeper than MAX_LAG
        _put(ring, 0, seq, seq)
    newest = 11 + FrameRing.MAX_LAG + 2
    assert _firsts(ring.pop()) == [newest - 1]
    assert _firsts(ring.pop()) == [newest]
    for _ in range(FrameRing.MAX_MISSES):
        assert _firsts(ring.pop()) == [0xFF]
    assert ring.next_seq[0] == -1  # cleared: the next packet primes again
    _put(ring, 0, 500, 50)
    _put(ring, 0, 501, 51)
    assert _firsts(ring.pop()) == [50]


def test_ring_reset_and_copy_rows() -> None:
    ring = FrameRing([0xFF, 0xFF])
    for seq in (5, 6):
        _put(ring, 0, seq, seq)
        _put(ring, 1, seq, seq + 100)
    ring.reset(0)
    assert _firsts(ring.pop()) == [0xFF, 105]
    bigger = FrameRing([0xFF, 0xFF, 0xFF])
    bigger.copy_rows(ring, [2], [1])
    assert _firsts(bigger.pop()) == [0xFF, 0xFF, 106]
