"""softswitch: a pure-Python SIP/RTP softswitch for an international callback service."""

__version__ = "0.1.0"
