"""Files written as streams: compressed, then encrypted, hashed, and only given their name
once complete (a crash or Ctrl-C leaves a ``.partial`` file, deleted, never a file that
looks whole). And the way back: hashed, decrypted, decompressed."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path
from typing import Any

import zstandard

from datamgmt import age

SUFFIXES = {"none": "", "gzip": ".gz", "zstd": ".zst"}


class _HashingFile:
    """The file at the bottom of the stack: counts and hashes what reaches the disk."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 - closed by OutputStream
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._file.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


class OutputStream:
    """Write plain bytes; get ``path`` compressed and/or age-encrypted, with its size and
    sha256. Use as a context manager: leaving it by an exception removes the partial file."""

    def __init__(
        self,
        path: Path,
        *,
        compression: str = "none",
        file_key: bytes | None = None,
        header: bytes | None = None,
    ) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._bottom = _HashingFile(self.partial)
        self._layers: list[Any] = []
        sink: Any = self._bottom
        if file_key is not None and header is not None:
            sink = age.AgeWriter(sink, file_key=file_key, header=header)
            self._layers.append(sink)
        if compression == "gzip":
            sink = gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=6, mtime=0)
            self._layers.append(sink)
        elif compression == "zstd":
            sink = zstandard.ZstdCompressor(level=3).stream_writer(sink, closefd=False)
            self._layers.append(sink)
        self._top = sink
        self.position = 0
        self.closed = False

    # file-like, for csv/zip/pyarrow writers
    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._top.write(data)
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass  # the layers flush as they close; flushing a compressor mid-stream costs ratio

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    @property
    def size(self) -> int:
        return self._bottom.size

    @property
    def sha256(self) -> str:
        return self._bottom.sha256.hexdigest()

    def close(self) -> None:
        if self.closed:
            return
        for layer in reversed(self._layers):
            layer.close()
        self._bottom.close()
        os.replace(self.partial, self.path)
        self.closed = True

    def abort(self) -> None:
        try:
            self._bottom._file.close()
        finally:
            self.partial.unlink(missing_ok=True)
            self.closed = True

    def __enter__(self) -> OutputStream:
        return self

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def open_input(
    path: Path,
    *,
    compression: str = "none",
    passphrases: list[str] | None = None,
    identities: list[bytes] | None = None,
    file_key: bytes | None = None,
) -> _InputStream:
    """Read ``path`` back as plain bytes (decrypted when it is age, then decompressed)."""
    raw: Any = open(path, "rb")  # noqa: SIM115 - the caller closes the returned stream
    layers: list[Any] = [raw]
    try:
        head = raw.read(len(age.VERSION_LINE) + 1)
        raw.seek(0)
        if age.is_age(head):
            layers.append(
                age.AgeReader(
                    raw, passphrases=passphrases, identities=identities, file_key=file_key
                )
            )
        if compression == "gzip":
            layers.append(gzip.GzipFile(fileobj=layers[-1], mode="rb"))
        elif compression == "zstd":
            layers.append(
                zstandard.ZstdDecompressor().stream_reader(
                    layers[-1], read_across_frames=True, closefd=False
                )
            )
    except BaseException:
        raw.close()
        raise
    return _InputStream(layers)


class _InputStream:
    def __init__(self, layers: list[Any]) -> None:
        self._layers = layers

    def read(self, size: int = -1) -> bytes:
        return self._layers[-1].read(size)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        for layer in reversed(self._layers):
            layer.close()

    def __enter__(self) -> _InputStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
