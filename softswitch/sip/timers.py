"""SIP transaction timers (RFC 3261 section 17 and table 4, RFC 6026 section 8.11).

Every timer is derived from three base values: T1 (the round-trip estimate, 500 ms), T2 (the
longest retransmission interval for non-INVITE requests and INVITE responses, 4 s) and T4 (the
longest time a message stays in the network, 5 s). :class:`TimerConfig` holds them; the
functions below turn them into the lettered timers. A ``None`` result means "this timer is not
started" (retransmission timers on reliable transports); ``0.0`` means "fires at once" (the
lingering timers D, I, J and K on reliable transports, which absorb nothing there).

All values are seconds; nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """The base timer values, and the automatic 100 (Trying) delay.

    ``trying_delay``: RFC 3261 section 17.2.1 says the INVITE server transaction sends a
    100 (Trying) itself when the TU has not sent a provisional response within 200 ms.
    ``None`` turns that off (the TU always answers at once).
    """

    T1: float = 0.5
    T2: float = 4.0
    T4: float = 5.0
    trying_delay: float | None = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.T1 <= self.T2:
            raise ValueError("timers need 0 < T1 <= T2")
        if self.T4 <= 0:
            raise ValueError("T4 must be positive")
        if self.trying_delay is not None and self.trying_delay < 0:
            raise ValueError("trying_delay must be >= 0 or None")


# --- client INVITE (RFC 3261 section 17.1.1.2, RFC 6026 section 8.4) --------------------------


def timer_a(cfg: TimerConfig, reliable: bool) -> float | None:
    """First INVITE retransmission interval: T1, only on unreliable transports."""
    return None if reliable else cfg.T1


def next_timer_a(interval: float) -> float:
    """Timer A doubles each time it fires, without a cap (bounded by Timer B)."""
    return 2.0 * interval


def timer_b(cfg: TimerConfig) -> float:
    """INVITE transaction timeout: 64*T1, all transports."""
    return 64.0 * cfg.T1


def timer_d(cfg: TimerConfig, reliable: bool) -> float:
    """Wait for response retransmissions in Completed: at least 32 s on UDP, 0 on TCP.

    32 s covers the server's 64*T1 retransmission window with default T1; a larger T1 stretches
    the server's window, so D follows it.
    """
    return 0.0 if reliable else max(32.0, 64.0 * cfg.T1)


def timer_m(cfg: TimerConfig) -> float:
    """RFC 6026: how long the client INVITE transaction stays Accepted to catch 2xx: 64*T1."""
    return 64.0 * cfg.T1


# --- client non-INVITE (RFC 3261 section 17.1.2.2) ----------------------------------------------


def timer_e(cfg: TimerConfig, reliable: bool) -> float | None:
    """First non-INVITE retransmission interval: T1, only on unreliable transports."""
    return None if reliable else cfg.T1


def next_timer_e(cfg: TimerConfig, interval: float, proceeding: bool) -> float:
    """Timer E doubles up to T2 in Trying; in Proceeding it is always T2."""
    return cfg.T2 if proceeding else min(2.0 * interval, cfg.T2)


def timer_f(cfg: TimerConfig) -> float:
    """Non-INVITE transaction timeout: 64*T1, all transports."""
    return 64.0 * cfg.T1


def timer_k(cfg: TimerConfig, reliable: bool) -> float:
    """Wait for response retransmissions in Completed: T4 on UDP, 0 on TCP."""
    return 0.0 if reliable else cfg.T4


# --- server INVITE (RFC 3261 section 17.2.1, RFC 6026 section 8.7) -----------------------------


def timer_g(cfg: TimerConfig, reliable: bool) -> float | None:
    """First final-response retransmission interval: T1, only on unreliable transports."""
    return None if reliable else cfg.T1


def next_timer_g(cfg: TimerConfig, interval: float) -> float:
    """Timer G doubles up to T2."""
    return min(2.0 * interval, cfg.T2)


def timer_h(cfg: TimerConfig) -> float:
    """Wait for the ACK to a non-2xx final response: 64*T1, all transports."""
    return 64.0 * cfg.T1


def timer_i(cfg: TimerConfig, reliable: bool) -> float:
    """Absorb ACK retransmissions in Confirmed: T4 on UDP, 0 on TCP."""
    return 0.0 if reliable else cfg.T4


def timer_l(cfg: TimerConfig) -> float:
    """RFC 6026: how long the server INVITE transaction stays Accepted: 64*T1."""
    return 64.0 * cfg.T1


# --- server non-INVITE (RFC 3261 section 17.2.2) ------------------------------------------------


def timer_j(cfg: TimerConfig, reliable: bool) -> float:
    """Absorb request retransmissions in Completed: 64*T1 on UDP, 0 on TCP."""
    return 0.0 if reliable else 64.0 * cfg.T1


__all__ = [
    "TimerConfig",
    "next_timer_a",
    "next_timer_e",
    "next_timer_g",
    "timer_a",
    "timer_b",
    "timer_d",
    "timer_e",
    "timer_f",
    "timer_g",
    "timer_h",
    "timer_i",
    "timer_j",
    "timer_k",
    "timer_l",
    "timer_m",
]
