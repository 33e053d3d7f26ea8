"""Clock-free receive buffers for G.711 streams on the 20 ms DSP clock.

`JitterBuffer` (one per leg whose audio is heard or recorded) is described here; `FrameRing`
(all legs whose audio is only analysed, in one array) in its own docstring.

Packets go in as they arrive (`put(seq, payload)`); the engine's tick takes exactly one frame
out (`pop()`). The buffer knows no time: depth is counted in frames. It starts playing once
`target` frames are queued, then plays sequence numbers in order; a frame that is missing when
its turn comes is concealed by repeating the last good payload with a falling gain (applied
after the batch decode), and after `max_conceal` missing frames in a row the output is silence
and the buffer re-primes. Late packets (behind the play-out point) are dropped; a queue that
grows past twice the target (sender clock faster than ours) drops its oldest frame; a jump of
more than `capacity` frames (a new source, a restart) flushes and re-primes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["CONCEAL_GAINS", "FrameRing", "JitterBuffer"]

# Gain for the 1st, 2nd, ... consecutive concealed frame: repeat, then fade to silence.
CONCEAL_GAINS = (0.8, 0.5, 0.3, 0.15, 0.05)


class JitterBuffer:
    """Reorders and paces one stream of fixed-duration payloads; see the module docstring."""

    __slots__ = (
        "capacity",
        "concealed",
        "dropped",
        "frames",
        "last",
        "late",
        "loss_run",
        "next_seq",
        "target",
    )

    def __init__(self, target: int = 3, capacity: int = 50) -> None:
        self.target = target
        self.capacity = capacity
        self.frames: dict[int, bytes] = {}
        self.next_seq: int | None = None
        self.last: bytes | None = None
        self.loss_run = 0
        self.late = 0
        self.dropped = 0
        self.concealed = 0

    def reset(self) -> None:
        """Forget everything queued (e.g. the source changed SSRC)."""
        self.frames.clear()
        self.next_seq = None
        self.last = None
        self.loss_run = 0

    def put(self, seq: int, payload: bytes) -> None:
        """Queue one packet's payload by its 16-bit RTP sequence number."""
        nxt = self.next_seq
        if nxt is not None:
            ahead = (seq - nxt) & 0xFFFF
            if ahead >= 0x8000:
                self.late += 1
                return
            if ahead >= self.capacity:
                self.frames.clear()
                self.next_seq = None
        elif len(self.frames) >= self.capacity:
            self.frames.clear()
        self.frames[seq] = payload

    def pop(self) -> tuple[bytes | None, float]:
        """The payload for this tick and the gain to apply after decoding.

        (payload, 1.0) for a received frame, (last payload, g < 1) for a concealed one, and
        (None, 0.0) when there is nothing to play (not primed, or concealment exhausted).
        """
        frames = self.frames
        nxt = self.next_seq
        if nxt is None:
            if len(frames) < self.target:
                return self._conceal()
            ref = next(iter(frames))
            nxt = min(frames, key=lambda s: (s - ref + 0x8000) & 0xFFFF)
        payload = frames.pop(nxt, None)
        nxt = (nxt + 1) & 0xFFFF
        if len(frames) > 2 * self.target and nxt in frames:
            # Queue too deep: skip a frame to bring latency back to the target.
            del frames[nxt]
            nxt = (nxt + 1) & 0xFFFF
            self.dropped += 1
        self.next_seq = nxt
        if payload is None:
            out = self._conceal()
            if self.loss_run > len(CONCEAL_GAINS) and not frames:
                self.next_seq = None
            return out
        self.last = payload
        self.loss_run = 0
        return payload, 1.0

    def _conceal(self) -> tuple[bytes | None, float]:
        run = self.loss_run
        self.loss_run = run + 1
        if self.last is None or run >= len(CONCEAL_GAINS):
            return None, 0.0
        self.concealed += 1
        return self.last, CONCEAL_GAINS[run]

    def __len__(self) -> int:
        return len(self.frames)


class FrameRing:
    """Receive buffers for many legs whose audio is only analysed (DTMF and fax detectors).

    One numpy array holds ``DEPTH`` packet slots per leg; the shell's fast path copies each
    datagram (normalised to a 12-byte header and 160 bytes of payload) into the slot of its
    sequence number with one memoryview assignment, and :meth:`pop` takes one frame for every
    leg with a handful of vectorised operations: no Python per leg on the tick. Play-out runs
    one frame behind the newest sequence received, which absorbs arrival jitter of up to one
    frame around the tick; a missing frame is returned as silence (no concealment: the
    detectors bridge short gaps themselves), a queue that grows past ``MAX_LAG`` frames (sender
    clock faster than ours, a burst) skips ahead, and ``MAX_MISSES`` missing frames in a row
    (the sender stopped) clear the leg and re-prime it on its next packet.
    """

    DEPTH = 8  # slots per leg, a power of two: slot = sequence number & (DEPTH - 1)
    SLOT = 172  # 12-byte RTP header + 160 bytes of G.711
    MAX_LAG = 4
    MAX_MISSES = 5

    def __init__(self, silence: list[int]) -> None:
        rows = len(silence)
        self.data = np.zeros((rows, self.DEPTH, self.SLOT), dtype=np.uint8)
        self.next_seq = np.full(rows, -1, dtype=np.int32)  # -1: not primed
        self.misses = np.zeros(rows, dtype=np.int32)
        self.silence = np.array(silence, dtype=np.uint8)
        # Views for pop(): one row per slot (gathered whole with take, much faster than
        # fancy indexing), and the first four bytes of every slot as one little-endian word.
        self._slots = self.data.reshape(rows * self.DEPTH, self.SLOT)
        self._heads = self.data.view(np.dtype("<u4"))[:, :, 0]
        self._rows = np.arange(rows)

    def __len__(self) -> int:
        return len(self.silence)

    def row_view(self, row: int) -> memoryview:
        """The writable bytes of one leg's slots (``DEPTH * SLOT``), for the fast path."""
        return memoryview(self.data[row].reshape(-1))

    def reset(self, row: int) -> None:
        """Forget a leg's queued frames (its source changed SSRC)."""
        self.data[row, :, 0] = 0
        self.next_seq[row] = -1
        self.misses[row] = 0

    def copy_rows(self, old: FrameRing, rows: list[int], old_rows: list[int]) -> None:
        """Carry the queued frames and play-out state of legs over from a previous ring."""
        if rows:
            self.data[rows] = old.data[old_rows]
            self.next_seq[rows] = old.next_seq[old_rows]
            self.misses[rows] = old.misses[old_rows]

    def pop(self) -> npt.NDArray[np.uint8]:
        """One 160-byte frame per leg, shape (legs, 160): received payload or silence."""
        rows = self._rows
        nxt = self.next_seq
        primed = nxt >= 0
        # Steady state looks at two slots per leg: the frame due now, and the one MAX_LAG + 1
        # frames later (present only when the queue has grown too deep).
        present = primed & self._holds(rows, nxt)
        behind = primed & self._holds(rows, (nxt + self.MAX_LAG + 1) & 0xFFFF)
        lost = ~present | behind
        if lost.any():
            # Unprimed, missing or too deep: re-prime one frame behind the newest received.
            sub = rows[lost]
            newest = self._newest(sub)
            fix = (newest >= 0) & (~primed[sub] | behind[sub])
            if fix.any():
                nxt = nxt.copy()
                nxt[sub[fix]] = (newest[fix] - 1) & 0xFFFF
                primed = nxt >= 0
                present[sub] = primed[sub] & self._holds(sub, nxt[sub])
        slot = rows * self.DEPTH + (nxt & (self.DEPTH - 1))
        frames = self._slots.take(slot, axis=0)[:, 12:]
        if not present.all():
            frames[~present] = self.silence[~present, None]
        self._slots[slot[present], 0] = 0  # played: never again
        misses = np.where(present, 0, self.misses + primed)
        stopped = misses >= self.MAX_MISSES
        if stopped.any():
            self.data[stopped, :, 0] = 0
            misses[stopped] = 0
        self.misses = misses
        self.next_seq = np.where(stopped | ~primed, -1, (nxt + 1) & 0xFFFF).astype(np.int32)
        result: npt.NDArray[np.uint8] = frames
        return result

    def _holds(
        self, rows: npt.NDArray[np.intp], seq: npt.NDArray[np.int32]
    ) -> npt.NDArray[np.bool_]:
        """Whether each leg's slot for ``seq`` holds that sequence number (unplayed)."""
        head = self._heads[rows, seq & (self.DEPTH - 1)].astype(np.int32)
        # Little-endian word: byte 0 (V=2: 0x80) low, sequence number in bytes 2-3.
        got = ((head >> 8) & 0xFF00) | ((head >> 24) & 0xFF)
        held: npt.NDArray[np.bool_] = ((head & 0xFF) == 0x80) & (got == seq)
        return held

    def _newest(self, rows: npt.NDArray[np.intp]) -> npt.NDArray[np.int32]:
        """The newest sequence number queued per leg in serial order, or -1 when none."""
        head = self.data[rows, :, :4]
        written = head[:, :, 0] == 0x80  # every slot we fill starts with V=2, no P/X/CC
        seqs = (head[:, :, 2].astype(np.int32) << 8) | head[:, :, 3]
        ref = seqs[np.arange(len(rows)), written.argmax(axis=1)]
        ahead = np.where(written, (seqs - ref[:, None]) & 0xFFFF, -1)
        # Slots "behind" the reference by serial arithmetic wrap to large values: fold them.
        ahead = np.where(ahead >= 0x8000, ahead - 0x10000, ahead)
        best = np.where(written, ahead, -0x10000).max(axis=1)
        newest: npt.NDArray[np.int32] = np.where(written.any(axis=1), (ref + best) & 0xFFFF, -1)
        return newest
