"""Mixing arithmetic: int32 sums, saturation, mix-minus."""

import numpy as np

from media.mixer import Bridge, mix, mix_minus


def test_mix_saturates_instead_of_wrapping() -> None:
    a = np.full(160, 30000, dtype=np.int16)
    b = np.full(160, 10000, dtype=np.int16)
    assert np.all(mix([a, b]) == 32767)
    assert np.all(mix([-a, -b]) == -32768)
    assert np.all(mix([a, -b]) == 20000)


def test_mix_minus_excludes_own_voice() -> None:
    frames = np.array([[100] * 4, [20] * 4, [3] * 4], dtype=np.int16)
    out = mix_minus(frames)
    assert out.dtype == np.int16
    assert out[:, 0].tolist() == [23, 103, 120]
    loud = np.array([[32000], [32000], [32000]], dtype=np.int16)
    assert mix_minus(loud)[:, 0].tolist() == [32767] * 3


def test_bridge_other() -> None:
    bridge = Bridge("a", "b")
    assert bridge.other("a") == "b" and bridge.other("b") == "a"
