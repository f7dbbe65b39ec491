"""asyncio adapters: they only move bytes and clock values in and out of the sans-I/O SIP core."""
