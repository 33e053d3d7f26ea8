"""G.711 mu-law and A-law by lookup table.

Theory of operation: ITU-T G.711 defines two 8-bit logarithmic companding laws built from eight
linear segments per sign. Both directions are tabulated once at import time: a 65536-entry encode
table indexed by the int16 sample (as uint16) and a 256-entry decode table. Encoding a 20 ms
frame is then one numpy fancy-index, and a whole batch of legs (an ``(n, 160)`` array) decodes in
one operation, which is what the media engine's DSP tick needs.

Sign handling follows the ITU-T G.191 reference software: negative inputs are folded with one's
complement (``~x``), so the quantiser is symmetric about -0.5 and ``x`` and ``-x - 1`` land in
mirror-image codes. Decoded values are the G.711 reconstruction values (interval mid-points) on
the 16-bit scale: mu-law tops out at +-32124 (8031 * 4 on the 14-bit scale), A-law at +-32256
(4032 * 8 on the 13-bit scale). Even bits of A-law code words are inverted on the line (XOR 0x55,
G.711 table 1 note); mu-law code words are fully inverted (G.711 table 2 note).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

Law = Literal["ulaw", "alaw"]

__all__ = [
    "ALAW_DECODE",
    "ALAW_ENCODE",
    "ULAW_DECODE",
    "ULAW_ENCODE",
    "Law",
    "alaw_decode",
    "alaw_encode",
    "decode",
    "decode_batch",
    "encode",
    "encode_batch",
    "transcode_alaw_to_ulaw",
    "transcode_ulaw_to_alaw",
    "ulaw_decode",
    "ulaw_encode",
]

# mu-law: the 14-bit magnitude is biased by 33 so that segment e covers biased values
# [32 * 2**e, 64 * 2**e) with step 2**(e + 1); the biased magnitude saturates at 8191 (G.711 table 2).
_ULAW_BIAS = 33
_ULAW_MAX_BIASED = 0x1FFF


def _build_ulaw_decode() -> NDArray[np.int16]:
    codes = np.arange(256)
    inverted = ~codes & 0xFF
    exponent = (inverted >> 4) & 0x07
    mantissa = inverted & 0x0F
    # Reconstruction value on the 14-bit scale: (2m + 33) * 2**e - 33, times 4 for 16 bits.
    magnitude = (((2 * mantissa + _ULAW_BIAS) << exponent) - _ULAW_BIAS) * 4
    sign = np.where(inverted & 0x80, -1, 1)
    out: NDArray[np.int16] = (sign * magnitude).astype(np.int16)
    return out


def _build_ulaw_encode() -> NDArray[np.uint8]:
    x = np.arange(-32768, 32768, dtype=np.int32)
    folded = np.where(x < 0, ~x, x) >> 2
    biased = np.minimum(folded + _ULAW_BIAS, _ULAW_MAX_BIASED)
    # Segment number: position of the highest set bit above bit 5 (biased >= 32 always).
    exponent = np.floor(np.log2(biased)).astype(np.int32) - 5
    mantissa = (biased >> (exponent + 1)) & 0x0F
    code = (exponent << 4) | mantissa
    code = np.where(x < 0, code | 0x80, code)
    table = np.empty(65536, dtype=np.uint8)
    # Index by the int16 bit pattern read as uint16, so lookups need no offset arithmetic.
    table[x.astype(np.uint16)] = (~code & 0xFF).astype(np.uint8)
    return table


def _build_alaw_decode() -> NDArray[np.int16]:
    codes = np.arange(256)
    plain = codes ^ 0x55
    exponent = (plain >> 4) & 0x07
    mantissa = plain & 0x0F
    # Segment 0 is linear with step 16 (16-bit scale); segment e >= 1 adds the implicit leading
    # one and doubles the step per segment (G.711 table 1).
    seg0 = mantissa * 16 + 8
    segn = (((mantissa + 16) * 16 + 8) << np.maximum(exponent - 1, 0)).astype(np.int64)
    magnitude = np.where(exponent == 0, seg0, segn)
    sign = np.where(plain & 0x80, 1, -1)
    return (sign * magnitude).astype(np.int16)


def _build_alaw_encode() -> NDArray[np.uint8]:
    x = np.arange(-32768, 32768, dtype=np.int32)
    folded = np.where(x < 0, ~x, x) >> 4  # magnitude on the 13-bit scale (sign dropped)
    # Segment 0 and 1 both have step 16 (16-bit scale); segment e >= 1 starts at 16 * 2**(e-1).
    exponent = np.where(
        folded < 16, 0, np.floor(np.log2(np.maximum(folded, 1))).astype(np.int32) - 3
    )
    mantissa = np.where(exponent == 0, folded, (folded >> np.maximum(exponent - 1, 0)) & 0x0F)
    code = (exponent << 4) | mantissa
    code = np.where(x >= 0, code | 0x80, code)
    table = np.empty(65536, dtype=np.uint8)
    table[x.astype(np.uint16)] = (code ^ 0x55).astype(np.uint8)
    return table


ULAW_DECODE: NDArray[np.int16] = _build_ulaw_decode()
ULAW_ENCODE: NDArray[np.uint8] = _build_ulaw_encode()
ALAW_DECODE: NDArray[np.int16] = _build_alaw_decode()
ALAW_ENCODE: NDArray[np.uint8] = _build_alaw_encode()

_ULAW_TO_ALAW: NDArray[np.uint8] = ALAW_ENCODE[ULAW_DECODE.view(np.uint16)]
_ALAW_TO_ULAW: NDArray[np.uint8] = ULAW_ENCODE[ALAW_DECODE.view(np.uint16)]
_DECODE = {"ulaw": ULAW_DECODE, "alaw": ALAW_DECODE}
_ENCODE = {"ulaw": ULAW_ENCODE, "alaw": ALAW_ENCODE}


def _as_int16(pcm: NDArray[np.int16]) -> NDArray[np.int16]:
    arr = np.asarray(pcm)
    if arr.dtype != np.int16:
        raise TypeError(f"G.711 encodes int16 PCM, got {arr.dtype}")
    return arr


def encode_batch(pcm: NDArray[np.int16], law: Law) -> NDArray[np.uint8]:
    """Encode an int16 array of any shape to G.711 code words of the same shape."""
    return _ENCODE[law][_as_int16(pcm).view(np.uint16)]


def decode_batch(payloads: NDArray[np.uint8], law: Law) -> NDArray[np.int16]:
    """Decode G.711 code words of any shape (typically ``(n, 160)``) to int16 PCM."""
    arr = np.asarray(payloads)
    if arr.dtype != np.uint8:
        raise TypeError(f"G.711 decodes uint8 code words, got {arr.dtype}")
    return _DECODE[law][arr]


def encode(pcm: NDArray[np.int16], law: Law) -> bytes:
    """Encode int16 PCM to a G.711 payload."""
    return encode_batch(pcm, law).tobytes()


def decode(data: bytes, law: Law) -> NDArray[np.int16]:
    """Decode a G.711 payload to int16 PCM."""
    return _DECODE[law][np.frombuffer(data, dtype=np.uint8)]


def ulaw_encode(pcm: NDArray[np.int16]) -> bytes:
    """Encode int16 PCM to mu-law (PCMU, RTP payload type 0)."""
    return encode(pcm, "ulaw")


def ulaw_decode(data: bytes) -> NDArray[np.int16]:
    """Decode mu-law (PCMU) bytes to int16 PCM."""
    return decode(data, "ulaw")


def alaw_encode(pcm: NDArray[np.int16]) -> bytes:
    """Encode int16 PCM to A-law (PCMA, RTP payload type 8)."""
    return encode(pcm, "alaw")


def alaw_decode(data: bytes) -> NDArray[np.int16]:
    """Decode A-law (PCMA) bytes to int16 PCM."""
    return decode(data, "alaw")


def transcode_ulaw_to_alaw(data: bytes) -> bytes:
    """Convert mu-law bytes to A-law by one 256-entry table (decode, then re-quantise)."""
    return _ULAW_TO_ALAW[np.frombuffer(data, dtype=np.uint8)].tobytes()


def transcode_alaw_to_ulaw(data: bytes) -> bytes:
    """Convert A-law bytes to mu-law by one 256-entry table (decode, then re-quantise)."""
    return _ALAW_TO_ULAW[np.frombuffer(data, dtype=np.uint8)].tobytes()
