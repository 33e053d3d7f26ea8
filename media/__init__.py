"""media: RTP sessions, G.711, DTMF, tones, prompts, recording, bridging. Knows nothing of SIP."""
