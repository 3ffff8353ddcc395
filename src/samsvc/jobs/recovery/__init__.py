"""Nothing accepted is lost: image leases tell a held image from a lost one, one reconciler acts
at a time (`leader`), and it finishes whatever a crash or an outage left undone."""
