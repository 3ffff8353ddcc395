"""The samsvc Python client: typed, sync (`Client`) and asyncio (`AsyncClient`), over the
generated gRPC stubs; masks come back as numpy arrays on demand.

    from samsvc.client import Client

    client = Client("127.0.0.1:50051")
    result = client.segment("photo.jpg", points_per_side=16)
    print(len(result), result.arrays().shape)
"""

from samsvc.client.aio import AsyncClient
from samsvc.client.channel import ChannelConfig
from samsvc.client.errors import (
    ClientError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from samsvc.client.results import Cost, ImageOutcome, JobUpdate, Mask, SegmentResult, coco_dataset
from samsvc.client.sync import Client

__all__ = [
    "AsyncClient",
    "ChannelConfig",
    "Client",
    "ClientError",
    "Cost",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FieldViolation",
    "ImageOutcome",
    "InvalidArgumentError",
    "JobUpdate",
    "Mask",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "SegmentResult",
    "UnauthenticatedError",
    "UnavailableError",
    "coco_dataset",
]
