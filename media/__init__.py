"""media: RTP sessions, G.711, DTMF, tones, prompts, recording, bridging. Knows nothing of SIP."""

import os

# The DSP runs one small batch every 20 ms on the event loop's core: BLAS worker threads only
# add wake-ups and spin on other cores (they doubled the CPU time in the first benchmarks).
# This must happen before numpy is first imported; an explicit setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
del _var
