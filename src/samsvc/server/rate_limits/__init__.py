"""The rate limiter's backends (the interface is samsvc.server.rate_limit): in memory for one
process (`memory`), or shared by every replica through Redis (`redis`)."""
