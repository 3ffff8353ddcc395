"""`samsvc embed FOLDER --out OUT`: every image's embedding computed by embedding jobs (at most the
server's batch limits each) and written as OUT/<image>.npy, with OUT/embeddings.json saying for
each image its session id, model, checkpoint digest and transform; images whose .npy is there
already are skipped, so an interrupted run resumes. `samsvc decoder --out decoder.onnx` fetches
the matching ONNX decoder."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import json_format
from tqdm import tqdm

from samsvc.client.commands.batch import chunks, list_images, output_dir
from samsvc.client.commands.flags import connect
from samsvc.client.commands.output import fail
from samsvc.client.errors import ClientError
from samsvc.client.sync import Client
from samsvc.config import DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_BATCH_IMAGES

INDEX_FILE = "embeddings.json"


def _load_index(out: Path) -> dict[str, Any]:
    path = out / INDEX_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _save_index(out: Path, index: dict[str, Any]) -> None:
    tmp = out / (INDEX_FILE + ".part")
    tmp.write_text(json.dumps(index, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(out / INDEX_FILE)


def _run_job(client: Client, args: argparse.Namespace, folder: Path, group: list[str], out: Path, names: set[str],
             index: dict[str, Any], bar: tqdm[Any] | None) -> int:  # fmt: skip
    digest = hashlib.sha256("\n".join([str(out.resolve()), *group]).encode()).hexdigest()[:32]
    job = client.submit_embeddings(
        [folder / n for n in group], model=args.model, priority=args.priority, request_id=f"samsvc-embed-{digest}"
    )
    failed = 0
    for update in client.watch(job.job_id):
        if update.kind != "image" or update.image is None:
            continue
        name = group[update.image.index]
        if not update.image.ok:
            failed += 1
            index[name] = {"error": str(update.image.error)}
        else:
            embedding = client.embedding(job_id=job.job_id, index=update.image.index, dtype=args.dtype)
            target = output_dir(out, name, names).with_suffix(".npy")
            target.parent.mkdir(parents=True, exist_ok=True)
            np.save(target, embedding.array())
            index[name] = {
                "npy": target.relative_to(out).as_posix(),
                "image_id": embedding.image_id,
                "model": embedding.model,
                "checkpoint_sha256": embedding.checkpoint_sha256,
                "job_id": job.job_id,
                "transform": json_format.MessageToDict(embedding.transform, preserving_proto_field_name=True),
            }
        _save_index(out, index)
        line = {"image": name, **index[name]}
        if args.json:
            print(json.dumps(line), flush=True)
        elif bar is not None:
            bar.update(1)
    return failed


def cmd_embed(args: argparse.Namespace) -> int:
    folder, out = Path(args.folder), Path(args.out)
    if not folder.is_dir():
        print(f"error: {args.folder} is not a folder", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    names = list_images(folder)
    index = _load_index(out)
    todo = [n for n in names if not (n in index and "npy" in index[n] and (out / index[n]["npy"]).is_file())]
    with connect(args) as client:
        try:
            limits = client.health().limits
            max_images = limits.max_batch_images or DEFAULT_MAX_BATCH_IMAGES
            max_bytes = limits.max_batch_bytes or DEFAULT_MAX_BATCH_BYTES
            bar = None if args.json else tqdm(total=len(names), initial=len(names) - len(todo), unit="img",
                                              desc="embedding", file=sys.stderr)  # fmt: skip
            failed = 0
            try:
                for group in chunks(folder, todo, max_images, max_bytes):
                    failed += _run_job(client, args, folder, group, out, set(names), index, bar)
            finally:
                if bar is not None:
                    bar.close()
        except ClientError as error:
            return fail(error, args.json)
    summary = {"total": len(names), "embedded": len(todo) - failed, "failed": failed,
               "skipped": len(names) - len(todo), "out": str(out)}  # fmt: skip
    print(json.dumps({"summary": summary}) if args.json else
          f"{summary['total']} images: {summary['embedded']} embedded, {failed} failed, "
          f"{summary['skipped']} there already; {out / INDEX_FILE}")  # fmt: skip
    return 1 if failed else 0


def cmd_decoder(args: argparse.Namespace) -> int:
    with connect(args) as client:
        try:
            data, info = client.decoder(
                args.model, int8=args.int8, reference_graph=args.reference_graph, cvat=args.cvat
            )
        except ClientError as error:
            return fail(error, args.json)
    target = Path(args.out)
    target.write_bytes(data)
    described = json_format.MessageToDict(info, preserving_proto_field_name=True)
    print(json.dumps({**described, "path": str(target)}) if args.json else
          f"{target}: {info.model_type} decoder ({described['graph']}, {described['quantization']}), "
          f"{len(data)} bytes, "
          f"sha256 {info.onnx_sha256}, checkpoint {info.checkpoint_sha256[:12]}")  # fmt: skip
    return 0
