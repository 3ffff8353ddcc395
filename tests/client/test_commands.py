"""`samsvc segment`, `samsvc batch` and `samsvc jobs` as a user runs them, against real servers
(embedded and Redis mode): outputs written and decodable, a forced failure reported with a
non-zero exit, `--json` parsed, and an interrupted batch resumed without redoing work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from samsvc.client import Client
from samsvc.client.commands.batch_state import STATE_FILE, BatchState, FinishedImage, PendingJob
from tests.client.conftest import Target
from tests.support import encode, scene, wait_for

pytestmark = pytest.mark.processes  # every test runs the `samsvc` command

FLAGS = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


def samsvc(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "samsvc.cli", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


#: `samsvc` with Ctrl-C's SIGINT handled as in a terminal even when the tests run as a shell's
#: background job, which starts them (and every child) with SIGINT ignored: Python then installs
#: no KeyboardInterrupt handler of its own.
CTRL_C_ABLE = [
    sys.executable,
    "-c",
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv = ['samsvc', *sys.argv[1:]]; runpy.run_module('samsvc.cli', run_name='__main__')",
]


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def folder_of_images(root: Path, count: int, size: tuple[int, int] = (64, 48), broken: str | None = None) -> Path:
    folder = root / "photos"
    folder.mkdir()
    for number in range(count):
        (folder / f"img_{number:02d}.png").write_bytes(encode(scene(*size, seed=40 + number)))
    if broken:
        (folder / broken).write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    return folder


def test_segment_writes_masks_and_overlay(target: Target, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(encode(scene(80, 60, seed=1)))
    out = tmp_path / "out"
    human = samsvc("segment", str(photo), "--out", str(out), "--server", target.address, *FLAGS)
    assert human.returncode == 0, human.stderr
    assert "masks" in human.stdout and "photo.png" in human.stdout
    pngs = sorted((out / "photo").glob("mask_*.png"))
    assert pngs and (out / "photo" / "overlay.png").exists()
    masks = np.stack([np.asarray(Image.open(p).convert("L")) > 0 for p in pngs])

    machine = samsvc(
        "segment", str(photo), "--out", str(tmp_path / "coco"), "--format", "coco", "--json",
        "--server", target.address, *FLAGS,
    )  # fmt: skip
    assert machine.returncode == 0, machine.stderr
    record = json_lines(machine.stdout)[0]
    assert record["file"] == str(photo) and len(record["masks"]) == len(pngs)
    coco = json.loads((tmp_path / "coco" / "photo" / "masks.json").read_text())
    decoded = np.stack([coco_mask.decode(a["segmentation"]).astype(bool) for a in coco["annotations"]])
    assert np.array_equal(decoded, masks), "PNG files and COCO JSON hold the same masks"


def test_batch_folder_with_a_failure_then_nothing_redone(target: Target, tmp_path: Path) -> None:
    folder = folder_of_images(tmp_path, 5, broken="broken.png")
    out = tmp_path / "out"
    server = ["--server", target.address]
    first = samsvc("batch", str(folder), "--out", str(out), "--json", "--chunk", "3", *server, *FLAGS)
    assert first.returncode == 1, first.stderr
    lines = json_lines(first.stdout)
    summary = lines[-1]["summary"]
    assert summary == {
        "total": 6, "done": 5, "failed": 1, "skipped": 0, "failed_files": ["broken.png"], "out": str(out),
    }  # fmt: skip
    failed = [line for line in lines if line.get("status") == "failed"]
    assert failed[0]["file"] == "broken.png" and failed[0]["error"]["code"] == "INVALID_ARGUMENT"
    # Each job's expected cost is said when it is queued: 6 images in chunks of 3.
    queued = [line for line in lines if line.get("status") == "queued"]
    assert [line["images"] for line in queued] == [3, 3]
    assert all(line["image_cost"]["prompts"] == 4 and line["image_cost"]["seconds"] > 0 for line in queued)
    for number in range(5):
        assert list((out / f"img_{number:02d}").glob("mask_*.png"))
        assert (out / f"img_{number:02d}" / "overlay.png").exists()

    with Client(target.address) as client:
        jobs_before = len(list(client.list_jobs(page_size=100)))
    again = samsvc("batch", str(folder), "--out", str(out), "--server", target.address, *FLAGS)
    assert again.returncode == 1
    assert "6 images: 5 done, 1 failed (6 finished by an earlier run)" in again.stdout
    assert "failed: broken.png" in again.stdout
    with Client(target.address) as client:
        assert len(list(client.list_jobs(page_size=100))) == jobs_before, "a finished folder submits nothing"


def test_interrupted_batch_resumes_without_redoing(target: Target, tmp_path: Path) -> None:
    folder = folder_of_images(tmp_path, 8, size=(160, 120))
    out = tmp_path / "out"
    state = out / ".samsvc-batch.json"
    flags = ["--points-per-side", "6", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]
    command = [*CTRL_C_ABLE, "batch", str(folder), "--out", str(out), "--chunk", "4",
               "--server", target.address, *flags]  # fmt: skip
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def some_done() -> bool:
        try:
            images = json.loads(state.read_text())["images"]
        except (OSError, ValueError):
            return False
        return len(images) >= 1

    wait_for(some_done, timeout=240, interval=0.02, what="the first image to be written")
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 130, err
    assert "run the same command to resume" in err
    saved = json.loads(state.read_text())
    done_before = {name for name, entry in saved["images"].items() if entry["status"] == "done"}
    assert done_before and len(done_before) < 8 and saved["pending"], "stopped mid-run with jobs pending"
    stamps = {name: os.stat(out / Path(name).with_suffix("") / "overlay.png").st_mtime_ns for name in done_before}
    with Client(target.address) as client:
        jobs_before = len(list(client.list_jobs(page_size=100)))

    resumed = samsvc(*command[3:])
    assert resumed.returncode == 0, resumed.stderr
    assert f"8 images: 8 done, 0 failed ({len(done_before)} finished by an earlier run)" in resumed.stdout
    assert "segmenting: 100%" in resumed.stderr and "8/8" in resumed.stderr, "progress bar with counts"
    assert "done    img_" in resumed.stderr and " masks in " in resumed.stderr, "a line per image"
    for name in done_before:
        assert os.stat(out / Path(name).with_suffix("") / "overlay.png").st_mtime_ns == stamps[name], "not redone"
    for number in range(8):
        assert list((out / f"img_{number:02d}").glob("mask_*.png"))
    with Client(target.address) as client:
        assert len(list(client.list_jobs(page_size=100))) == jobs_before, "the running jobs were reattached"
    assert json.loads(state.read_text())["pending"] == []


def test_jobs_commands(target: Target, tmp_path: Path) -> None:
    with Client(target.address) as client:
        images = [encode(scene(64, 48, seed=s)) for s in range(2)]
        outcomes = list(client.segment_batch(images, points_per_side=2, pred_iou_thresh=0, stability_score_thresh=0))
    job_id = outcomes[0].job_id
    server = ["--server", target.address]

    status = samsvc("jobs", "status", job_id, "--json", *server)
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "JOB_STATUS_COMPLETED"
    assert "completed" in samsvc("jobs", "status", job_id, *server).stdout

    results = samsvc("jobs", "results", job_id, "--out", str(tmp_path / "r"), "--json", *server)
    assert results.returncode == 0, results.stderr
    assert [r["index"] for r in json_lines(results.stdout)] == [0, 1]
    assert list((tmp_path / "r" / "image_0000").glob("mask_*.png"))

    listing = samsvc("jobs", "list", "--json", "--status", "completed", *server)
    assert job_id in [j["job_id"] for j in json.loads(listing.stdout)["jobs"]]

    cancelled = samsvc("jobs", "cancel", job_id, *server)
    assert cancelled.returncode == 0 and "completed" in cancelled.stdout  # an ended job stays as it was

    missing = samsvc("jobs", "status", "job_missing", "--json", *server)
    assert missing.returncode == 1 and json.loads(missing.stdout)["error"]["reason"] == "JOB_NOT_FOUND"


def test_batch_progress_file_round_trips_and_reads_its_layout(tmp_path: Path) -> None:
    written = {
        "version": 1,
        "images": {
            "a.png": {"status": "done", "masks": 3, "job_id": "job_1"},
            "b.png": {"status": "failed", "error": "bad image", "job_id": "job_1"},
            "c.png": {"status": "failed", "error": "the job ended (cancelled) before it ran"},
        },
        "pending": [{"job_id": "job_2", "cursor": "7-0", "files": ["d.png", "e.png"]}],
    }
    (tmp_path / STATE_FILE).write_text(json.dumps(written))
    state = BatchState.load(tmp_path)
    assert state.images["a.png"] == FinishedImage("done", "job_1", masks=3)
    assert state.pending == [PendingJob("job_2", ["d.png", "e.png"], "7-0")]
    assert state.in_flight() == {"d.png", "e.png"} and state.counts() == {"done": 1, "failed": 2}
    state.save()
    assert json.loads((tmp_path / STATE_FILE).read_text()) == written
    (tmp_path / STATE_FILE).write_text(json.dumps({**written, "version": 2}))
    with pytest.raises(SystemExit, match="another samsvc version"):
        BatchState.load(tmp_path)
