"""Byte caches shared by the server's result cache and the engine's embedding cache: bounded
in memory, or in Redis (shared by every replica) with a time to live."""
