"""samsvc: Segment Anything behind protobuf contracts.

The code made from protos/ lives in generated/samsvc/ and is joined to this package here,
so `samsvc.v1` (messages and stubs) and `samsvc.engine` etc. import from one name.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
