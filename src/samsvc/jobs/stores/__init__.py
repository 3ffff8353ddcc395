"""The job store's backends (the interface is samsvc.jobs.store): in memory for the in-process
mode (`memory`), Redis for the others (`redis` for jobs, results and listing, `redis_ledger` for
the image ledger, `redis_base` what both share, `lua/` their atomic scripts)."""
