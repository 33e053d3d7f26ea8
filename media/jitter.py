"""A clock-free jitter buffer for one received G.711 stream on the 20 ms DSP clock.

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

__all__ = ["CONCEAL_GAINS", "JitterBuffer"]

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
