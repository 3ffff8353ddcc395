"""`samsvc jobs status|results|cancel|list`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from samsvc.client.commands.flags import connect
from samsvc.client.commands.output import error_dict, fail, job_line, mask_rows, message_dict, write_outputs
from samsvc.client.errors import ClientError
from samsvc.client.sync import Client


def cmd_jobs(args: argparse.Namespace) -> int:
    with connect(args) as client:
        try:
            if args.jobs_command == "status":
                job = client.status(args.job_id)
                print(json.dumps(message_dict(job)) if args.json else job_line(job))
            elif args.jobs_command == "cancel":
                job = client.cancel(args.job_id)
                print(json.dumps(message_dict(job)) if args.json else job_line(job))
            elif args.jobs_command == "list":
                _list_jobs(client, args)
            else:
                return _job_results(client, args)
        except ClientError as error:
            return fail(error, args.json)
    return 0


def _list_jobs(client: Client, args: argparse.Namespace) -> None:
    jobs = []
    for job in client.list_jobs(status=args.status):
        jobs.append(job)
        if len(jobs) >= args.limit:
            break
    if args.json:
        print(json.dumps({"jobs": [message_dict(j) for j in jobs]}))
    else:
        for job in jobs:
            print(job_line(job))


def _job_results(client: Client, args: argparse.Namespace) -> int:
    failed = 0
    for outcome in client.results(args.job_id):
        outputs: list[str] = []
        if outcome.result is not None and args.out:
            outputs = write_outputs(outcome.result, Path(args.out) / f"image_{outcome.index:04d}", args.format, None)
        failed += 0 if outcome.ok else 1
        if args.json:
            record: dict[str, Any] = {"index": outcome.index}
            if outcome.result is not None:
                record.update({"masks": mask_rows(outcome.result), "outputs": outputs})
            else:
                record["error"] = error_dict(outcome.error) if outcome.error else {}
            print(json.dumps(record))
        elif outcome.result is not None:
            print(f"image {outcome.index}: {len(outcome.result)} masks" + (f" -> {outputs[0]}" if outputs else ""))
        else:
            print(f"image {outcome.index}: {outcome.error}")
    return 1 if failed else 0
