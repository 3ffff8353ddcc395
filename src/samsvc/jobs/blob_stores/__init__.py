"""The blob store's backends (the interface is samsvc.jobs.blobs): a directory shared by servers
and workers (`local`), or an S3-compatible bucket (`s3`)."""
