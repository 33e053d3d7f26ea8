"""The clock-free jitter buffer."""

from media.jitter import CONCEAL_GAINS, JitterBuffer


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
