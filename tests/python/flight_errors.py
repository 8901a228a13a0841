"""Checks, against a running `tripline serve`, what a pyarrow client sees for bad tickets and
what flight info describes; also that examples/torch_consumer.py imports without torch.

Usage: python tests/python/flight_errors.py ADDRESS WORLD_SIZE
Exits non-zero (with the failed assertion) on any mismatch.
"""

import json
import os
import sys

import pyarrow as pa
import pyarrow.flight as flight

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
import torch_consumer  # noqa: E402  (must import with or without torch)

address, world_size = sys.argv[1], int(sys.argv[2])
client = flight.connect(f"grpc://{address}")


def refused(ticket: bytes, needle: str) -> None:
    try:
        client.do_get(flight.Ticket(ticket)).read_all()
    except pa.ArrowInvalid as e:  # Status::invalid_argument arrives as ArrowInvalid
        assert needle in str(e), f"{needle!r} not in {e}"
        return
    raise AssertionError(f"ticket {ticket!r} was accepted")


refused(b"{not json", "malformed ticket")
refused(json.dumps({"rank": 0, "world_size": world_size}).encode(), "missing field `epoch`")
refused(json.dumps({"rank": world_size, "world_size": world_size, "epoch": 0}).encode(),
        f"rank {world_size} is outside a world of size {world_size}")

info = torch_consumer.flight_info(address, world_size)
assert info["schema"].names[:2] == ["id", "label"], info["schema"]
assert info["sink"] == "trainer", info
assert info["epochs"] == 2, info
assert info["batch_size"] == 256, info

arrays = torch_consumer.to_arrays(
    pa.record_batch({"id": pa.array([1, 2], pa.int64()),
                     "emb": pa.FixedSizeListArray.from_arrays(pa.array([0.5, 1, 2, 3], pa.float32()), 2),
                     "text": ["a", "b"]}),
    as_torch=False)
assert arrays["emb"].shape == (2, 2) and arrays["emb"][1, 1] == 3.0, arrays
assert arrays["id"].tolist() == [1, 2] and arrays["text"] == ["a", "b"]
print("ok")
