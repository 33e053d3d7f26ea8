"""``softswitch demo``: the emulated carrier and phones, and the demo run (not production code)."""
