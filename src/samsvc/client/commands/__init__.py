"""The client commands of `samsvc`: `segment`, `batch`, `embed`, `decoder` and
`jobs status|results|cancel|list`,
one module each, with their shared flags (flags.py) and output (output.py).

Human output by default, one JSON document (or JSON lines while a batch runs) with `--json`.
Exit codes: 0 success, 1 a call or an image failed, 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

from typing import Any

from samsvc.client.channel import JOB_STATUSES, PRIORITIES
from samsvc.client.commands.batch import cmd_batch
from samsvc.client.commands.embed import cmd_decoder, cmd_embed
from samsvc.client.commands.flags import add_client_flags, add_option_flags
from samsvc.client.commands.jobs import cmd_jobs
from samsvc.client.commands.output import FILE_FORMATS
from samsvc.client.commands.segment import cmd_segment

#: Jobs listed by `samsvc jobs list` unless --limit says otherwise.
DEFAULT_LIST_LIMIT = 20


def register(commands: Any) -> None:
    """Add `segment`, `batch`, `embed`, `decoder` and `jobs` to the `samsvc` command's subparsers."""
    segment = commands.add_parser("segment", help="segment images on a server; write masks and an overlay")
    segment.add_argument("images", nargs="+", help="image files")
    segment.add_argument("--out", default="out", help="output folder (a subfolder per image)")
    segment.add_argument("--format", choices=FILE_FORMATS, default="png", help="a PNG per mask, or one COCO JSON")
    add_option_flags(segment)
    add_client_flags(segment)
    segment.set_defaults(client_handler=cmd_segment)

    batch = commands.add_parser("batch", help="segment a folder as batch jobs, with progress; resumable")
    batch.add_argument("folder", help="folder of images (.jpg, .jpeg, .png, .webp; subfolders too)")
    batch.add_argument("--out", default="out", help="output folder; holds the progress file for resuming")
    batch.add_argument("--format", choices=FILE_FORMATS, default="png", help="a PNG per mask, or one COCO JSON")
    batch.add_argument("--priority", choices=tuple(PRIORITIES), default="normal")
    batch.add_argument(
        "--export-url", default="", help="also export each image (COCO JSON, overlay) to s3://bucket/prefix or a folder"
    )
    batch.add_argument("--chunk", type=int, default=0, help="images per job (default: the server's batch limit)")
    add_option_flags(batch)
    add_client_flags(batch)
    batch.set_defaults(client_handler=cmd_batch)

    embed = commands.add_parser("embed", help="a folder's image embeddings as .npy files, by embedding jobs")
    embed.add_argument("folder", help="folder of images (.jpg, .jpeg, .png, .webp; subfolders too)")
    embed.add_argument("--out", default="embeddings", help="output folder (its embeddings.json indexes the files)")
    embed.add_argument("--model", default=None, help="model name (server default when absent)")
    embed.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    embed.add_argument("--priority", choices=tuple(PRIORITIES), default="normal")
    add_client_flags(embed)
    embed.set_defaults(client_handler=cmd_embed)

    decoder = commands.add_parser("decoder", help="download a model's ONNX prompt decoder")
    decoder.add_argument("--model", default=None, help="model name (server default when absent)")
    decoder.add_argument("--int8", action="store_true", help="the int8-quantized decoder")
    decoder.add_argument(
        "--reference-graph",
        action="store_true",
        help="segment-anything's own export model instead of the folded graph (same answers, slower)",
    )
    decoder.add_argument(
        "--cvat",
        action="store_true",
        help="the graph CVAT's SAM plugin loads (its /assets/decoder.onnx: cropped uint8 masks and their box)",
    )
    decoder.add_argument("--out", default="decoder.onnx", help="file to write")
    add_client_flags(decoder)
    decoder.set_defaults(client_handler=cmd_decoder)

    jobs = commands.add_parser("jobs", help="status, results, cancellation and listing of jobs")
    actions = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    for name, text in (("status", "a job's status"), ("results", "a job's per-image results"),
                       ("cancel", "cancel a job")):  # fmt: skip
        action = actions.add_parser(name, help=text)
        action.add_argument("job_id")
        if name == "results":
            action.add_argument("--out", default="", help="write each image's masks under this folder")
            action.add_argument("--format", choices=FILE_FORMATS, default="png")
        add_client_flags(action)
        action.set_defaults(client_handler=cmd_jobs)
    listing = actions.add_parser("list", help="this key's jobs, newest first")
    listing.add_argument("--status", choices=tuple(JOB_STATUSES))
    listing.add_argument("--limit", type=int, default=DEFAULT_LIST_LIMIT)
    add_client_flags(listing)
    listing.set_defaults(client_handler=cmd_jobs)
