"""G.711 against the standard's segment formulas, written independently of media.g711."""

import numpy as np
import pytest

from media import g711

# G.711 table 2 (mu-law) and table 1 (A-law): the lower decision value of each segment on the
# 14-bit (mu) / 13-bit (A) scale and the quantisation step inside it.
MU_EDGES = (-1, 31, 95, 223, 479, 991, 2015, 4063)
A_EDGES = (0, 32, 64, 128, 256, 512, 1024, 2048)
A_STEPS = (2, 2, 4, 8, 16, 32, 64, 128)


def ulaw_reference(code: int) -> int:
    """Mu-law reconstruction value (interval mid-point) on the 16-bit scale."""
    c = ~code & 0xFF
    seg, m = (c >> 4) & 7, c & 15
    step = 2 ** (seg + 1)
    value = MU_EDGES[seg] + m * step + step // 2
    return int(-value if c & 0x80 else value) * 4


def alaw_reference(code: int) -> int:
    """A-law reconstruction value (interval mid-point) on the 16-bit scale."""
    c = code ^ 0x55
    seg, m = (c >> 4) & 7, c & 15
    value = A_EDGES[seg] + m * A_STEPS[seg] + A_STEPS[seg] // 2
    return (value if c & 0x80 else -value) * 8


def test_ulaw_decode_matches_segment_table() -> None:
    for code in range(256):
        assert int(g711.ULAW_DECODE[code]) == ulaw_reference(code), hex(code)


def test_alaw_decode_matches_segment_table() -> None:
    for code in range(256):
        assert int(g711.ALAW_DECODE[code]) == alaw_reference(code), hex(code)


def test_known_code_words() -> None:
    assert g711.ulaw_encode(np.array([0], np.int16)) == b"\xff"
    assert g711.alaw_encode(np.array([0], np.int16)) == b"\xd5"
    assert g711.ulaw_encode(np.array([32767, -32768], np.int16)) == b"\x80\x00"
    assert g711.alaw_encode(np.array([32767, -32768], np.int16)) == b"\xaa\x2a"
    assert g711.ULAW_DECODE[0x80] == 32124 and g711.ALAW_DECODE[0xAA] == 32256


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_encoder_picks_nearest_reconstruction(law: g711.Law) -> None:
    x = np.arange(-32768, 32768, dtype=np.int16)
    dec = g711.decode_batch(g711.encode_batch(x, law), law).astype(np.int64)
    table = np.unique(g711.decode_batch(np.arange(256, dtype=np.uint8), law).astype(np.int64))
    # Monotonic quantiser, and never further than half a step (+ input truncation) away.
    assert np.all(np.diff(dec) >= 0)
    idx = np.searchsorted(table, dec)
    gap = np.diff(table)
    step = np.maximum(gap[np.clip(idx - 1, 0, len(gap) - 1)], gap[np.clip(idx, 0, len(gap) - 1)])
    inside = np.abs(x.astype(np.int64)) <= table[-1]
    assert np.all((np.abs(dec - x) <= step // 2 + 8)[inside])
    # Odd symmetry about -0.5: x and ~x get mirror-image reconstructions.
    assert np.array_equal(dec, -dec[::-1])


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_round_trip_all_codes(law: g711.Law) -> None:
    codes = np.arange(256, dtype=np.uint8)
    once = g711.decode_batch(codes, law)
    twice = g711.decode_batch(g711.encode_batch(once, law), law)
    assert np.array_equal(once, twice)


def test_batch_shapes_and_bytes_api() -> None:
    rng = np.random.default_rng(3)
    pcm = rng.integers(-32768, 32767, size=(5, 160)).astype(np.int16)
    codes = g711.encode_batch(pcm, "ulaw")
    assert codes.shape == (5, 160) and codes.dtype == np.uint8
    dec = g711.decode_batch(codes, "ulaw")
    assert np.array_equal(dec[2], g711.ulaw_decode(g711.ulaw_encode(pcm[2])))
    assert np.array_equal(
        g711.decode_batch(g711.encode_batch(pcm, "alaw"), "alaw")[4],
        g711.alaw_decode(g711.alaw_encode(pcm[4])),
    )
    with pytest.raises(TypeError):
        g711.encode_batch(pcm.astype(np.int32), "ulaw")


def test_transcoding_tables() -> None:
    codes = bytes(range(256))
    a = g711.transcode_ulaw_to_alaw(codes)
    assert len(a) == 256
    lin_u = g711.ulaw_decode(codes).astype(int)
    lin_a = g711.alaw_decode(a).astype(int)
    # Re-quantising can only lose the difference between the two laws' steps.
    assert np.all(np.abs(lin_u - lin_a) <= np.maximum(16, np.abs(lin_u) // 16))
    back = g711.transcode_alaw_to_ulaw(bytes(range(256)))
    assert g711.ulaw_decode(back)[0xD5] == 8 and len(back) == 256
