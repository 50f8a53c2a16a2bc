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
I/O, and nothing else: one dict slot per URI whose value is the blob (or a tuple of blobs
for a URI with several variants). While the memory tier holds the same variant, the
index keeps no blob at all but a placeholder (`lend`): the tiered store reads the metadata
from memory then, and the memory tier hands it back (`reclaim`) when it evicts the variant,
so a small object's metadata is held once. File names are derived from the keys, body
lengths and sizes from the open file (`fstat`, `stat` before an unlink), so the index
keeps no paths, records or sizes; a file deleted behind the tier's back is dropped from
the index when it is next opened, and its bytes stay counted until the next open of the
tier rescans. Recency is in-process LRU by URI (eviction drops the least recently used
URI's oldest variant first); across a restart it starts from file modification times. The
order is the dict's own insertion order (a use re-inserts the URI at the end): a plain dict
slot costs half an `OrderedDict` one. Finding the oldest URI walks past the slots freed at
the dict's front since its last resize, so eviction in a large tier frees a batch of
objects more than it must (at most 1/1024 of the budget) and walks once per batch.

Metadata updates (freshening after a 304, soft purge) rewrite the tail in place: a crash
mid-update leaves a CRC mismatch, and the object is dropped on the next open.

All methods are blocking and thread-safe (one lock guards the index, renames and unlinks;
data is written outside it): the tiered store runs them in worker threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from millions.edge.storage.base import ObjectTooLarge, TierCounters
from millions.edge.storage.codec import CorruptMetadata, decode_entry, secondary_of

logger = logging.getLogger(__name__)

#: v2: the metadata blob stores common header names as codes and dates as seconds (see
#: `codec`); files of another version are dropped when the tier opens.
_MAGIC = b"MEDGE\x00v2"
_HEADER = struct.Struct("<8sQIII")
BODY_OFFSET = _HEADER.size

#: URIs taken from the front of the index per walk when evicting.
_EVICTION_BATCH = 64
#: Budgets from this size evict up to a batch of objects (at most 1/1024 of the budget) more
#: than they must, so that one walk past the index's freed front slots serves many stores
#: (smaller ones evict exactly: their index is small).
_EVICTION_SLACK_FROM = 64 << 20


def object_name(primary: bytes, secondary: bytes) -> str:
    """The file name of one variant: a hash, so any key bytes make a safe name."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(len(primary).to_bytes(4, "little"))
    digest.update(primary)
    digest.update(secondary)
    return digest.hexdigest()


def _crc(primary: bytes, meta: bytes) -> int:
    return zlib.crc32(meta, zlib.crc32(primary))


class _Lent:
    """The index's placeholder for a variant whose metadata the memory tier holds: it is
    not visible through `variants` or `meta_of` until `reclaim` gives the blob back."""

    __slots__ = ("secondary",)

    def __init__(self, secondary: bytes) -> None:
        self.secondary = secondary


#: The placeholder of a variant without Vary (most objects): one shared object.
_LENT_PLAIN = _Lent(b"")

_Variant = bytes | _Lent

#: One URI's variants in the index: the metadata blob (or placeholder) of its only variant
#: (most URIs have one), else a tuple of them, oldest first. File paths and sizes are
#: derived (from the keys and from the file) instead of kept, so an object indexed in both
#: tiers costs this tier one dict slot.
_Variants = _Variant | tuple[_Variant, ...]


def _lent(secondary: bytes) -> _Lent:
    return _LENT_PLAIN if not secondary else _Lent(secondary)


def _secondary(variant: _Variant) -> bytes:
    return variant.secondary if isinstance(variant, _Lent) else secondary_of(variant)


def _all(variants: _Variants) -> tuple[_Variant, ...]:
    return variants if isinstance(variants, tuple) else (variants,)


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

    def commit(self, meta: bytes, *, lent: bool = False) -> None:
        """Publish the body with `meta`; `lent`: the memory tier holds the same variant
        (see `DiskTier.lend`)."""
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
            self._tier._publish(
                self.primary, self.secondary, self._temp, self.body_length, meta, lent
            )
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
        self._objects_dir = str(self._objects)
        self._lock = threading.Lock()
        self._lru: dict[bytes, _Variants] = {}
        self._temp_serial = 0
        self._objects.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._scan()

    def _path(self, primary: bytes, secondary: bytes) -> str:
        name = object_name(primary, secondary)
        return f"{self._objects_dir}/{name[:2]}/{name}"

    # -- opening ---------------------------------------------------------------

    def _scan(self) -> None:
        for leftover in self._tmp.iterdir():
            leftover.unlink(missing_ok=True)
        found: list[tuple[float, bytes, bytes, int]] = []
        for path in self._objects.glob("*/*"):
            loaded = self._load(path)
            if loaded is None:
                logger.warning("dropping unreadable cache object %s", path)
                path.unlink(missing_ok=True)
            else:
                found.append(loaded)
        found.sort(key=lambda item: item[0])
        for _, primary, meta, size in found:
            self._index(primary, meta, size)
        self._evict()

    @staticmethod
    def _load(path: Path) -> tuple[float, bytes, bytes, int] | None:
        """(modification time, primary key, metadata, file size) of a valid object file."""
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
        return stat.st_mtime, primary, meta, stat.st_size

    # -- index (callers hold the lock) -------------------------------------------

    def _index(self, primary: bytes, meta: _Variant, size: int) -> None:
        """Index a variant that is not indexed yet, as the most recently used."""
        variants = self._lru.pop(primary, None)
        if variants is None:
            self._lru[primary] = meta
        else:
            self._lru[primary] = (*_all(variants), meta)
        self.counters.stored_bytes += size
        self.counters.objects += 1

    def _meta(self, primary: bytes, secondary: bytes) -> _Variant | None:
        """The indexed variant: its metadata blob, or a placeholder if it is lent."""
        variants = self._lru.get(primary)
        if variants is None:
            return None
        if isinstance(variants, bytes):  # the common case: one variant, not lent
            return variants if secondary_of(variants) == secondary else None
        for meta in _all(variants):
            if _secondary(meta) == secondary:
                return meta
        return None

    def _set_variant(self, primary: bytes, secondary: bytes, meta: _Variant | None) -> None:
        """Replace (or with None, drop) the indexed variant `secondary` of `primary`, which
        must be indexed; recency is unchanged."""
        variants = self._lru[primary]
        if not isinstance(variants, tuple):
            if meta is None:
                del self._lru[primary]
            else:
                self._lru[primary] = meta
            return
        kept: list[_Variant] = []
        for old in variants:
            if _secondary(old) != secondary:
                kept.append(old)
            elif meta is not None:
                kept.append(meta)
        self._lru[primary] = kept[0] if len(kept) == 1 else tuple(kept)

    def _remove_file(self, primary: bytes, secondary: bytes) -> None:
        """Drop an indexed variant: unindex it and delete its file."""
        path = self._path(primary, secondary)
        self._set_variant(primary, secondary, None)
        self.counters.objects -= 1
        self.counters.stored_bytes -= _file_size(path)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def _evict(self) -> None:
        """Drop least recently used variants (the oldest URI's oldest variant first) until
        the files fit the budget; a large tier frees up to a batch more (see
        `_EVICTION_SLACK_FROM`)."""
        counters = self.counters
        if counters.stored_bytes <= self.max_bytes:
            return
        slack = 0
        if self.max_bytes >= _EVICTION_SLACK_FROM:
            # about one walk's worth of objects, so the lock is never held for long
            average = counters.stored_bytes // max(counters.objects, 1)
            slack = min(self.max_bytes // 1024, _EVICTION_BATCH * average)
        target = self.max_bytes - slack
        lru = self._lru
        while counters.stored_bytes > target and lru:
            for primary in list(itertools.islice(lru, _EVICTION_BATCH)):
                for variant in _all(lru[primary]):  # oldest first
                    if counters.stored_bytes <= target:
                        return
                    self._remove_file(primary, _secondary(variant))
                    counters.evictions += 1

    def _publish(
        self,
        primary: bytes,
        secondary: bytes,
        temp: Path,
        body_length: int,
        meta: bytes,
        lent: bool = False,
    ) -> None:
        """Move a finished temporary file into place and index it (called by DiskWriter)."""
        final = self._path(primary, secondary)
        size = BODY_OFFSET + body_length + len(primary) + len(meta)
        with contextlib.suppress(FileExistsError):
            os.mkdir(os.path.dirname(final))
        with self._lock:
            if self._meta(primary, secondary) is not None:
                self.counters.stored_bytes -= _file_size(final)
                self.counters.objects -= 1
                self._set_variant(primary, secondary, None)
            os.replace(temp, final)
            self._index(primary, _lent(secondary) if lent else meta, size)
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
            variants = self._lru.get(primary)
            if variants is None:
                return []
            if touch:
                self._lru[primary] = self._lru.pop(primary)
            if isinstance(variants, bytes):
                return [variants]
            return [meta for meta in _all(variants) if isinstance(meta, bytes)]

    def open_body(self, primary: bytes, secondary: bytes) -> DiskBody | None:
        """The stored body, open for reading (zero-copy sending); None if not stored."""
        with self._lock:
            meta = self._meta(primary, secondary)
            if meta is None:
                self.counters.misses += 1
                return None
            self._lru[primary] = self._lru.pop(primary)
            path = self._path(primary, secondary)
            try:
                # Opened under the lock: a concurrent purge unlinks only after this.
                file = open(path, "rb")  # DiskBody closes it
            except OSError:
                logger.warning("cache object %s vanished; dropping it", path)
                self._remove_file(primary, secondary)
                self.counters.misses += 1
                return None
            try:
                body_length = _body_length(file)
            except OSError:
                file.close()
                logger.warning("cache object %s is unreadable; dropping it", path)
                self._remove_file(primary, secondary)
                self.counters.misses += 1
                return None
            self.counters.hits += 1
        return DiskBody(file, BODY_OFFSET, body_length)

    def read_body(self, primary: bytes, secondary: bytes) -> bytes | None:
        body = self.open_body(primary, secondary)
        if body is None:
            return None
        with body:
            return body.read_all()

    def meta_of(self, primary: bytes, secondary: bytes) -> bytes | None:
        """One variant's current metadata blob, or None (also while it is lent)."""
        with self._lock:
            meta = self._meta(primary, secondary)
            return meta if isinstance(meta, bytes) else None

    def lend(self, primary: bytes, secondary: bytes, meta: bytes) -> bool:
        """The memory tier now holds this variant with metadata `meta`: keep a placeholder
        instead of the blob. False (nothing changed) if the indexed metadata differs."""
        with self._lock:
            if self._meta(primary, secondary) != meta:
                return False
            self._set_variant(primary, secondary, _lent(secondary))
            return True

    def reclaim(self, primary: bytes, meta: bytes) -> None:
        """The memory tier dropped a variant it held with metadata `meta`: if this tier
        lent it, keep the blob again."""
        secondary = secondary_of(meta)
        with self._lock:
            if isinstance(self._meta(primary, secondary), _Lent):
                self._set_variant(primary, secondary, meta)

    def set_meta(self, primary: bytes, secondary: bytes, meta: bytes) -> bool:
        with self._lock:
            old = self._meta(primary, secondary)
            if old is None:
                return False
            path = self._path(primary, secondary)
            try:
                with open(path, "r+b") as file:
                    old_size = os.fstat(file.fileno()).st_size
                    body_length = _body_length(file)
                    old_meta_length = old_size - BODY_OFFSET - body_length - len(primary)
                    file.seek(BODY_OFFSET + body_length + len(primary))
                    file.write(meta)
                    file.truncate()
                    file.seek(0)
                    file.write(
                        _HEADER.pack(
                            _MAGIC, body_length, len(primary), len(meta), _crc(primary, meta)
                        )
                    )
            except OSError:
                logger.warning("cannot update cache object %s; dropping it", path)
                self._remove_file(primary, secondary)
                return False
            self.counters.stored_bytes += len(meta) - old_meta_length
            self._set_variant(primary, secondary, old if isinstance(old, _Lent) else meta)
            self._evict()
            return True

    def remove(self, primary: bytes) -> int:
        with self._lock:
            variants = self._lru.get(primary)
            if variants is None:
                return 0
            metas = _all(variants)
            for meta in metas:
                self._remove_file(primary, _secondary(meta))
            return len(metas)

    def remove_variant(self, primary: bytes, secondary: bytes) -> bool:
        with self._lock:
            if self._meta(primary, secondary) is None:
                return False
            self._remove_file(primary, secondary)
            return True

    def primary_keys(self) -> Iterator[bytes]:
        with self._lock:
            return iter(list(self._lru))


def _body_length(file: BinaryIO) -> int:
    """The body length in an object file's header."""
    header = os.pread(file.fileno(), BODY_OFFSET, 0)
    if len(header) != BODY_OFFSET:
        raise OSError("truncated cache object header")
    return int(_HEADER.unpack(header)[1])


def _file_size(path: str) -> int:
    """The size of the file at `path`; 0 if it is gone (removed behind the tier's back)."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0
