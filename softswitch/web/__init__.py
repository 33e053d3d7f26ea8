"""The node's HTTP side: the trigger page, the admin API and /metrics (aiohttp)."""
