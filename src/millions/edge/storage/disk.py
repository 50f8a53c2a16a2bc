"""The disk tier: one file per object, bounded in bytes, kept across restarts.

File layout: a fixed header (magic, body length, primary key length, metadata length,
CRC-32 of key and metadata), the body, the primary key, the metadata blob. The body comes
first so a streamed body is written as it arrives and the metadata, known only at the end,
is appended at commit; the body sits at a fixed offset, so a hit is (file, offset, length)
for `os.sendfile`. Files are written to `tmp/` and renamed into `objects/` (atomic on
POSIX), so a reader never sees half an object; an open reader keeps the old file if the
object is replaced or purged meanwhile.

The index is rebuilt on open by scanning `objects/` rather than kept in SQLite: the files
are the only source of truth, so there is nothing to keep consistent and nothing to
repair after a crash. A file that is truncated, has a bad magic or CRC, a name that does
not match its keys, or metadata that does not decode is deleted during the scan. Bodies
are not checksummed (that would mean reading every body on open); a truncated body shows
as a size mismatch. The index holds each object's metadata blob so that lookups do no
I/O. Recency is in-process LRU; across a restart it starts from file modification times.

Metadata updates (freshening after a 304, soft purge) rewrite the tail in place: a crash
mid-update leaves a CRC mismatch, and the object is dropped on the next open.

All methods are blocking and thread-safe (one lock guards the index, renames and unlinks;
data is written outside it): the tiered store runs them in worker threads.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from millions.edge.storage.base import ObjectTooLarge, TierCounters
from millions.edge.storage.codec import CorruptMetadata, decode_entry, secondary_of

logger = logging.getLogger(__name__)

_MAGIC = b"MEDGE\x00v1"
_HEADER = struct.Struct("<8sQIII")
BODY_OFFSET = _HEADER.size


def object_name(primary: bytes, secondary: bytes) -> str:
    """The file name of one variant: a hash, so any key bytes make a safe name."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(len(primary).to_bytes(4, "little"))
    digest.update(primary)
    digest.update(secondary)
    return digest.hexdigest()


def _crc(primary: bytes, meta: bytes) -> int:
    return zlib.crc32(meta, zlib.crc32(primary))


@dataclass(slots=True)
class _Record:
    path: Path
    body_length: int
    meta: bytes
    size: int


@dataclass(slots=True)
class DiskBody:
    """An open stored body: send `length` bytes from `offset` of `file` (`os.sendfile`
    takes exactly these). The file stays readable if the object is purged meanwhile.
    Close it when done (it is a context manager)."""

    file: BinaryIO
    offset: int
    length: int

    def read_all(self) -> bytes:
        self.file.seek(self.offset)
        return self.file.read(self.length)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> DiskBody:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class DiskWriter:
    """Streams one body to a temporary file; `commit(meta)` publishes it, `abort()` (or
    leaving a `with` block on an exception) discards it. Only one chunk is held at a time."""

    def __init__(self, tier: DiskTier, primary: bytes, secondary: bytes, temp: Path) -> None:
        self._tier = tier
        self.primary = primary
        self.secondary = secondary
        self._temp = temp
        self._file: BinaryIO | None = open(temp, "wb")  # closed by commit/abort
        self._file.write(bytes(BODY_OFFSET))
        self.body_length = 0

    def write(self, chunk: bytes) -> None:
        if self._file is None:
            raise ValueError("writer is already committed or aborted")
        self.body_length += len(chunk)
        if BODY_OFFSET + self.body_length > self._tier.max_bytes:
            self.abort()
            raise ObjectTooLarge(f"body exceeds the disk tier's {self._tier.max_bytes} bytes")
        self._file.write(chunk)

    def commit(self, meta: bytes) -> None:
        file = self._file
        if file is None:
            raise ValueError("writer is already committed or aborted")
        if secondary_of(meta) != self.secondary:
            self.abort()
            raise ValueError("metadata is for another secondary key than the writer")
        try:
            file.write(self.primary)
            file.write(meta)
            file.seek(0)
            file.write(
                _HEADER.pack(
                    _MAGIC,
                    self.body_length,
                    len(self.primary),
                    len(meta),
                    _crc(self.primary, meta),
                )
            )
            file.close()
            self._tier._publish(self.primary, self.secondary, self._temp, self.body_length, meta)
        except BaseException:
            self.abort()
            raise
        self._file = None

    def abort(self) -> None:
        """Discard the body (nothing to do once committed or aborted)."""
        if self._file is None:
            return
        self._file.close()
        self._file = None
        self._temp.unlink(missing_ok=True)

    def __enter__(self) -> DiskWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()


class DiskTier:
    """Objects as files under `root`, at most `max_bytes` in total (file sizes)."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        if max_bytes <= BODY_OFFSET:
            raise ValueError("disk tier max_bytes is too small")
        self.root = root
        self.max_bytes = max_bytes
        self.counters = TierCounters()
        self._objects = root / "objects"
        self._tmp = root / "tmp"
        self._lock = threading.Lock()
        self._lru: OrderedDict[tuple[bytes, bytes], _Record] = OrderedDict()
        self._by_primary: dict[bytes, set[bytes]] = {}
        self._temp_serial = 0
        self._objects.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._scan()

    # -- opening ---------------------------------------------------------------

    def _scan(self) -> None:
        for leftover in self._tmp.iterdir():
            leftover.unlink(missing_ok=True)
        found: list[tuple[float, bytes, bytes, _Record]] = []
        for path in self._objects.glob("*/*"):
            loaded = self._load(path)
            if loaded is None:
                logger.warning("dropping unreadable cache object %s", path)
                path.unlink(missing_ok=True)
            else:
                found.append(loaded)
        found.sort(key=lambda item: item[0])
        for _, primary, secondary, record in found:
            self._index(primary, secondary, record)
        self._evict()

    @staticmethod
    def _load(path: Path) -> tuple[float, bytes, bytes, _Record] | None:
        try:
            with open(path, "rb") as file:
                stat = os.fstat(file.fileno())
                header = file.read(BODY_OFFSET)
                if len(header) != BODY_OFFSET:
                    return None
                magic, body_length, primary_length, meta_length, crc = _HEADER.unpack(header)
                if magic != _MAGIC:
                    return None
                if stat.st_size != BODY_OFFSET + body_length + primary_length + meta_length:
                    return None
                file.seek(BODY_OFFSET + body_length)
                primary = file.read(primary_length)
                meta = file.read(meta_length)
        except OSError:
            return None
        if _crc(primary, meta) != crc:
            return None
        try:
            secondary = decode_entry(meta).secondary_key
        except (CorruptMetadata, ValueError):
            return None
        if path.name != object_name(primary, secondary):
            return None
        return stat.st_mtime, primary, secondary, _Record(path, body_length, meta, stat.st_size)

    # -- index (callers hold the lock) -------------------------------------------

    def _index(self, primary: bytes, secondary: bytes, record: _Record) -> None:
        self._lru[(primary, secondary)] = record
        self._by_primary.setdefault(primary, set()).add(secondary)
        self.counters.stored_bytes += record.size
        self.counters.objects += 1

    def _unindex(self, primary: bytes, secondary: bytes) -> _Record | None:
        record = self._lru.pop((primary, secondary), None)
        if record is None:
            return None
        secondaries = self._by_primary[primary]
        secondaries.discard(secondary)
        if not secondaries:
            del self._by_primary[primary]
        self.counters.stored_bytes -= record.size
        self.counters.objects -= 1
        return record

    def _evict(self) -> None:
        while self.counters.stored_bytes > self.max_bytes and self._lru:
            primary, secondary = next(iter(self._lru))
            record = self._unindex(primary, secondary)
            if record is not None:
                record.path.unlink(missing_ok=True)
                self.counters.evictions += 1

    def _publish(
        self, primary: bytes, secondary: bytes, temp: Path, body_length: int, meta: bytes
    ) -> None:
        """Move a finished temporary file into place and index it (called by DiskWriter)."""
        name = object_name(primary, secondary)
        final = self._objects / name[:2] / name
        size = BODY_OFFSET + body_length + len(primary) + len(meta)
        final.parent.mkdir(exist_ok=True)
        with self._lock:
            os.replace(temp, final)
            self._unindex(primary, secondary)
            self._index(primary, secondary, _Record(final, body_length, meta, size))
            self._evict()

    # -- the tier interface --------------------------------------------------------

    def begin(self, primary: bytes, secondary: bytes) -> DiskWriter:
        """A writer that streams one variant's body to disk."""
        with self._lock:
            self._temp_serial += 1
            serial = self._temp_serial
        temp = self._tmp / f"{os.getpid()}-{threading.get_ident()}-{serial}"
        return DiskWriter(self, primary, secondary, temp)

    def put(self, primary: bytes, secondary: bytes, meta: bytes, body: bytes) -> None:
        with self.begin(primary, secondary) as writer:
            writer.write(body)
            writer.commit(meta)

    def variants(self, primary: bytes, *, touch: bool = True) -> list[bytes]:
        with self._lock:
            metas = []
            for secondary in self._by_primary.get(primary, ()):
                key = (primary, secondary)
                if touch:
                    self._lru.move_to_end(key)
                metas.append(self._lru[key].meta)
            return metas

    def open_body(self, primary: bytes, secondary: bytes) -> DiskBody | None:
        """The stored body, open for reading (zero-copy sending); None if not stored."""
        with self._lock:
            record = self._lru.get((primary, secondary))
            if record is None:
                self.counters.misses += 1
                return None
            self._lru.move_to_end((primary, secondary))
            try:
                # Opened under the lock: a concurrent purge unlinks only after this.
                file = open(record.path, "rb")  # DiskBody closes it
            except OSError:
                logger.warning("cache object %s vanished; dropping it", record.path)
                self._unindex(primary, secondary)
                self.counters.misses += 1
                return None
            self.counters.hits += 1
        return DiskBody(file, BODY_OFFSET, record.body_length)

    def read_body(self, primary: bytes, secondary: bytes) -> bytes | None:
        body = self.open_body(primary, secondary)
        if body is None:
            return None
        with body:
            return body.read_all()

    def meta_of(self, primary: bytes, secondary: bytes) -> bytes | None:
        """One variant's current metadata blob, or None."""
        with self._lock:
            record = self._lru.get((primary, secondary))
            return None if record is None else record.meta

    def set_meta(self, primary: bytes, secondary: bytes, meta: bytes) -> bool:
        with self._lock:
            record = self._lru.get((primary, secondary))
            if record is None:
                return False
            try:
                with open(record.path, "r+b") as file:
                    file.seek(BODY_OFFSET + record.body_length + len(primary))
                    file.write(meta)
                    file.truncate()
                    file.seek(0)
                    file.write(
                        _HEADER.pack(
                            _MAGIC,
                            record.body_length,
                            len(primary),
                            len(meta),
                            _crc(primary, meta),
                        )
                    )
            except OSError:
                logger.warning("cannot update cache object %s; dropping it", record.path)
                self._unindex(primary, secondary)
                record.path.unlink(missing_ok=True)
                return False
            size = BODY_OFFSET + record.body_length + len(primary) + len(meta)
            self.counters.stored_bytes += size - record.size
            record.meta = meta
            record.size = size
            self._evict()
            return True

    def remove(self, primary: bytes) -> int:
        with self._lock:
            removed = 0
            for secondary in list(self._by_primary.get(primary, ())):
                record = self._unindex(primary, secondary)
                if record is not None:
                    record.path.unlink(missing_ok=True)
                    removed += 1
            return removed

    def remove_variant(self, primary: bytes, secondary: bytes) -> bool:
        with self._lock:
            record = self._unindex(primary, secondary)
            if record is None:
                return False
            record.path.unlink(missing_ok=True)
            return True

    def primary_keys(self) -> Iterator[bytes]:
        with self._lock:
            return iter(list(self._by_primary))
