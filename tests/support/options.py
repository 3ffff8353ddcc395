"""The one set of fast segmentation options the job and batch tests use: a 2x2 grid that keeps
every mask, so an image costs four prompts and always answers something."""

from __future__ import annotations

from samsvc.v1 import segmentation_service_pb2 as pb

FAST = pb.SegmentOptions(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)
