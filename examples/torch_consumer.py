"""Feed a PyTorch trainer from a tripline Flight server (`tripline serve` / `type: flight`).

The server speaks plain Arrow Flight, so the only dependency is ``pyarrow``; ``torch`` is
optional (this module imports and its iterators work without it, yielding numpy arrays).

    from torch.utils.data import DataLoader
    from torch_consumer import FlightIterableDataset

    ds = FlightIterableDataset("127.0.0.1:50051")            # rank 0 of 1
    for epoch in range(3):
        ds.set_epoch(epoch)
        for batch in DataLoader(ds, batch_size=None):        # one item = one training batch
            loss = model(batch["embedding"], batch["label"])  # torch tensors

With ``torch.distributed`` initialised, ``DistributedFlightDataset`` reads its rank and world
size from it: each rank receives a disjoint part of every epoch (batch ``seq`` goes to rank
``seq % world_size``), together exactly the epoch. With ``n`` batches per epoch, ranks
``0 .. n % world_size - 1`` get one batch more; wrap the training loop in
``torch.distributed.algorithms.Join`` (or stop every rank at the smallest count, published as
``rank_batches`` by ``flight_info``) when the step count must be equal.

Tensors come from Arrow buffers without copying where Arrow allows it: numeric columns without
nulls and fixed-size lists of numbers (embeddings) become numpy views of the received buffers
(read-only) and then ``torch.from_numpy`` views; strings become Python lists.

Use the DataLoader with ``num_workers=0`` (or 1): the server already prepares batches in
parallel, and two workers of one rank would compete for the same stream. The dataset receives
and converts ``prefetch`` batches (default 2) ahead on a background thread (``Prefetcher``), so
the next batch is usually ready when the training step ends.

A dropped connection is resumed transparently: the iterator reconnects with a ticket naming the
last batch received (``"after": seq``) and the server continues without loss or duplication, as
long as the batches needed are still in its replay buffer.

Run as a script to consume a server and report what arrived (used by the tests and the
benchmark)::

    python examples/torch_consumer.py --address 127.0.0.1:50051 --rank 0 --world-size 2 \
        --epochs 2 --out rank0.json
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight

try:  # torch is optional
    import torch
    from torch.utils.data import IterableDataset as _Base
except ImportError:  # pragma: no cover - exercised where torch is absent
    torch = None
    _Base = object


def _options(token: str | None) -> flight.FlightCallOptions:
    headers = [(b"authorization", b"Bearer " + token.encode())] if token else []
    return flight.FlightCallOptions(headers=headers)


def flight_info(address: str, world_size: int | None = None, token: str | None = None) -> dict:
    """The server's description: schema, epochs, batches per epoch (once known), per-rank
    counts, buffer sizes."""
    client = flight.connect(f"grpc://{address}")
    cmd = json.dumps({"world_size": world_size} if world_size else {})
    info = client.get_flight_info(flight.FlightDescriptor.for_command(cmd), _options(token))
    meta = json.loads(info.app_metadata) if info.app_metadata else {}
    meta["schema"] = info.schema
    meta["total_records"] = info.total_records
    return meta


class FlightBatches:
    """Iterates over ``(pyarrow.RecordBatch, meta)`` for one rank and one epoch.

    ``meta`` is the server's per-batch JSON: ``epoch``, ``seq`` (position in the epoch),
    ``index`` (position in the first pass, the same in every epoch) and ``rows``. The stream
    ends with a zero-row batch whose metadata is ``{"end": ...}`` (not yielded); after the
    iteration, ``self.end`` says how it ended: ``"epoch"`` (the rank's part of the epoch is
    complete) or ``"shutdown"`` (the server stopped first).
    """

    def __init__(
        self,
        address: str,
        rank: int = 0,
        world_size: int = 1,
        epoch: int = 0,
        token: str | None = None,
        reconnects: int = 5,
        retry_seconds: float = 10.0,
        after: int | None = None,
        disconnect_after: int | None = None,
    ):
        self.address = address
        self.rank = rank
        self.world_size = world_size
        self.epoch = epoch
        self.token = token
        self.max_reconnects = reconnects
        self.retry_seconds = retry_seconds
        self.after = after
        self.disconnect_after = disconnect_after  # test hook: drop the stream once, resume
        self.end: str | None = None
        self.reconnects = 0  # streams resumed after a dropped connection
        self.waited = 0.0  # seconds spent waiting for the next batch

    def _ticket(self) -> flight.Ticket:
        t = {"rank": self.rank, "world_size": self.world_size, "epoch": self.epoch}
        if self.after is not None:
            t["after"] = self.after
        return flight.Ticket(json.dumps(t).encode())

    def _open(self, client: flight.FlightClient):
        deadline = time.monotonic() + self.retry_seconds
        while True:
            try:
                return client.do_get(self._ticket(), _options(self.token))
            except (flight.FlightError, pa.ArrowException) as e:  # ALREADY_EXISTS: ArrowException
                # A resumed rank may be refused until the server notices the old connection
                # closed ("already being served"); anything else is final.
                if "already being served" in str(e) and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                raise

    def __iter__(self) -> Iterator[tuple[pa.RecordBatch, dict]]:
        client = flight.connect(f"grpc://{self.address}")
        failures = 0
        received = 0
        while True:
            reader = self._open(client)
            try:
                while True:
                    t0 = time.perf_counter()
                    try:
                        chunk = reader.read_chunk()
                    except StopIteration:
                        return
                    self.waited += time.perf_counter() - t0
                    meta = json.loads(chunk.app_metadata.to_pybytes()) if chunk.app_metadata else {}
                    if "end" in meta:  # the end marker: a zero-row batch
                        self.end = meta["end"]
                        continue
                    self.after = meta["seq"]
                    received += 1
                    yield chunk.data, meta
                    if self.disconnect_after is not None and received == self.disconnect_after:
                        self.disconnect_after = None
                        reader.cancel()
                        raise flight.FlightCancelledError("test hook: disconnect")
            except (flight.FlightUnavailableError, flight.FlightCancelledError,
                    flight.FlightInternalError):
                failures += 1
                if failures > self.max_reconnects:
                    raise
                self.reconnects += 1
                client = flight.connect(f"grpc://{self.address}")


class Prefetcher:
    """Reads up to ``depth`` items of ``source`` ahead on a background thread, so receiving and
    decoding the next batches overlaps the training step (pyarrow and torch release the GIL
    while they work). Order is kept; an exception in ``source`` is raised at the item where it
    happened; leaving the loop early stops the thread. ``waited`` accumulates the seconds the
    consumer spent blocked waiting for an item.
    """

    _END = object()

    def __init__(self, source: Iterable, depth: int = 2):
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self.source = source
        self.depth = depth
        self.waited = 0.0

    def __iter__(self) -> Iterator[Any]:
        q: queue.Queue = queue.Queue(maxsize=self.depth)
        stop = threading.Event()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def run() -> None:
            try:
                for item in self.source:
                    if not put((None, item)):
                        return
                put((None, self._END))
            except BaseException as e:  # handed to the consumer
                put((e, None))

        t = threading.Thread(target=run, name="flight-prefetch", daemon=True)
        t.start()
        try:
            while True:
                t0 = time.perf_counter()
                err, item = q.get()
                self.waited += time.perf_counter() - t0
                if err is not None:
                    raise err
                if item is self._END:
                    return
                yield item
        finally:
            stop.set()


def to_arrays(batch: pa.RecordBatch, as_torch: bool = True) -> dict[str, Any]:
    """Columns as numpy arrays (zero-copy views where Arrow allows), torch tensors when torch is
    installed and ``as_torch``; strings as lists."""
    out: dict[str, Any] = {}
    for name, col in zip(batch.schema.names, batch.columns):
        t = col.type
        if pa.types.is_fixed_size_list(t) and (pa.types.is_floating(t.value_type)
                                               or pa.types.is_integer(t.value_type)):
            if col.null_count == 0 and col.values.null_count == 0:
                flat = col.flatten()  # respects slicing; a view of the child buffer
                arr = flat.to_numpy(zero_copy_only=True).reshape(len(col), t.list_size)
            else:
                arr = np.array(col.to_pylist(), dtype=np.float32)
        elif (pa.types.is_integer(t) or pa.types.is_floating(t)) and col.null_count == 0:
            arr = col.to_numpy(zero_copy_only=True)
        elif pa.types.is_boolean(t) and col.null_count == 0:
            arr = col.to_numpy(zero_copy_only=False)
        else:
            out[name] = col.to_pylist()
            continue
        if as_torch and torch is not None:
            import warnings

            with warnings.catch_warnings():
                # Arrow buffers are immutable: the tensor is a read-only view.
                warnings.simplefilter("ignore", UserWarning)
                arr = torch.from_numpy(arr)
        out[name] = arr
    return out


class FlightIterableDataset(_Base):
    """An ``IterableDataset`` over one rank's part of the current epoch: each item is a whole
    training batch (a dict of column name to tensor / array / list). Use it with
    ``DataLoader(ds, batch_size=None)`` and call ``set_epoch`` before each epoch."""

    def __init__(self, address: str, rank: int = 0, world_size: int = 1,
                 token: str | None = None, as_torch: bool = True, prefetch: int = 2):
        self.address = address
        self.rank = rank
        self.world_size = world_size
        self.token = token
        self.as_torch = as_torch
        self.prefetch = prefetch  # batches received and converted ahead; 0: none
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> FlightBatches:
        return FlightBatches(self.address, self.rank, self.world_size, self.epoch, self.token)

    def __iter__(self):
        items = (to_arrays(batch, self.as_torch) for batch, _meta in self.batches())
        yield from (Prefetcher(items, self.prefetch) if self.prefetch else items)


class DistributedFlightDataset(FlightIterableDataset):
    """``FlightIterableDataset`` whose rank and world size come from ``torch.distributed``."""

    def __init__(self, address: str, token: str | None = None, as_torch: bool = True,
                 prefetch: int = 2):
        if torch is None or not torch.distributed.is_initialized():
            raise RuntimeError("DistributedFlightDataset needs an initialised torch.distributed "
                               "process group; use FlightIterableDataset(rank=, world_size=)")
        super().__init__(address, torch.distributed.get_rank(),
                         torch.distributed.get_world_size(), token, as_torch, prefetch)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--address", default="127.0.0.1:50051")
    p.add_argument("--rank", type=int, default=0)
    p.add_argument("--world-size", type=int, default=1)
    p.add_argument("--epochs", type=int, default=1, help="epochs to consume, from epoch 0")
    p.add_argument("--token", default=None)
    p.add_argument("--id-column", default="id", help="column reported per batch in --out")
    p.add_argument("--out", default=None, help="write what arrived as JSON here")
    p.add_argument("--prefetch", type=int, default=0,
                   help="batches to receive ahead on a background thread (0: none)")
    p.add_argument("--disconnect-after", type=int, default=None,
                   help="drop the stream once after this many batches and resume (test hook)")
    args = p.parse_args(argv)
    report = {"rank": args.rank, "world_size": args.world_size, "batches": [], "ends": [],
              "reconnects": []}
    for epoch in range(args.epochs):
        it = FlightBatches(args.address, args.rank, args.world_size, epoch, args.token,
                           disconnect_after=args.disconnect_after if epoch == 0 else None)
        for batch, meta in (Prefetcher(it, args.prefetch) if args.prefetch else it):
            arrays = to_arrays(batch, as_torch=False)
            ids = arrays.get(args.id_column)
            meta = dict(meta)
            meta["ids"] = [int(x) for x in ids] if ids is not None else None
            report["batches"].append(meta)
        report["ends"].append(it.end)
        report["reconnects"].append(it.reconnects)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f)
    n = len(report["batches"])
    rows = sum(b["rows"] for b in report["batches"])
    print(f"rank {args.rank}/{args.world_size}: {n} batches, {rows} rows, ends {report['ends']}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
