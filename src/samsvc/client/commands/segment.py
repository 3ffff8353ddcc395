"""`samsvc segment IMAGE...`: each image segmented by one Segment call; its masks and overlay
written under OUT/<image stem>/."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from samsvc.client.commands.flags import connect, options_of
from samsvc.client.commands.output import error_dict, mask_rows, write_outputs
from samsvc.client.errors import ClientError


def cmd_segment(args: argparse.Namespace) -> int:
    out = Path(args.out)
    failures = 0
    with connect(args) as client:
        for name in args.images:
            path = Path(name)
            try:
                result = client.segment(path, model=args.model, **options_of(args))
            except ClientError as error:
                failures += 1
                if args.json:
                    print(json.dumps({"file": str(path), "error": error_dict(error)}))
                else:
                    print(f"{path}: {error}", file=sys.stderr)
                continue
            outputs = write_outputs(result, out / path.stem, args.format, path)
            if args.json:
                print(json.dumps({"file": str(path), "job_id": result.job_id, "model": result.model,
                                  "masks": mask_rows(result), "outputs": outputs}))  # fmt: skip
                continue
            cached = ", cached" if result.cache_hit else ""
            print(f"{path}: {len(result)} masks ({result.width}x{result.height}, model {result.model}, "
                  f"{result.processing_time_s:.2f} s{cached}) -> {out / path.stem}")  # fmt: skip
            for number, row in enumerate(mask_rows(result)):
                print(f"  {number:3d}  area {row['area']:>8}  bbox {row['bbox']}  "
                      f"iou {row['predicted_iou']:.3f}  stability {row['stability_score']:.3f}")  # fmt: skip
    return 1 if failures else 0
