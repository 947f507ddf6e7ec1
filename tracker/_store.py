"""The array store: Zarr v3 under one root (a local path or any fsspec URL).

Rows never hold arrays, only their path, shape, dtype and chunking (``arrays`` table).
Arrays that several tasks fill (a surface's grid) are created once, before their tasks
exist, with chunks equal to one task's block, so each writer owns whole chunks: two writers
to one chunk would lose updates.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
import zarr
import zarr.errors

from tracker._exceptions import CorruptArray, StoreError

if TYPE_CHECKING:
    from zarr.core.array_spec import ArrayConfigParams

# A chunk equal to the fill value (a tile of NaN losses) is still written, so a missing
# chunk always means unfinished or lost work.
_KEEP_EVERY_CHUNK: ArrayConfigParams = {"write_empty_chunks": True}


@dataclass(frozen=True)
class ArraySpec:
    """What a row records about an array."""

    path: str
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]


def _spec(path: str, arr: zarr.Array) -> ArraySpec:
    return ArraySpec(path, tuple(arr.shape), str(arr.dtype), tuple(arr.chunks))


@contextlib.contextmanager
def _writing(url: str, path: str) -> Iterator[None]:
    """A write the file system refuses (read-only, full, gone) is one StoreError naming it."""
    try:
        yield
    except OSError as err:
        raise StoreError(
            f"cannot write array {path!r} to the store {url} ({err.strerror or err}): make the "
            "store writable and give it space, or point TRACKER_STORE / --store elsewhere"
        ) from None


class ArrayStore:
    """A Zarr group holding every array of one tracker installation."""

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        """Open (or create) the store at ``url``; ``read_only`` opens an existing store for
        reading only (the dashboard): a missing one is an error, never created."""
        self.url = url
        try:
            if read_only:
                self.root = zarr.open_group(store=url, mode="r", zarr_format=3)
                return
            try:
                self.root = zarr.open_group(store=url, mode="a", zarr_format=3)
            except zarr.errors.ContainsGroupError:
                # Another worker created the root between our look and our create.
                self.root = zarr.open_group(store=url, mode="r+", zarr_format=3)
        except Exception as err:
            raise StoreError(
                f"cannot open the array store at {url} ({type(err).__name__}: {err}): "
                "fix TRACKER_STORE / --store"
            ) from None

    def create(
        self,
        path: str,
        shape: Sequence[int],
        dtype: Any,
        chunks: Sequence[int],
        fill_value: Any = None,
    ) -> ArraySpec:
        """Create an empty array, or keep an existing one with the same layout (idempotent)."""
        shape, chunks = tuple(int(s) for s in shape), tuple(int(c) for c in chunks)
        dtype = np.dtype(dtype)
        if fill_value is None:
            fill_value = np.nan if dtype.kind == "f" else 0
        existing = self._open(path, missing_ok=True)
        if existing is not None and (
            tuple(existing.shape) == shape
            and tuple(existing.chunks) == chunks
            and existing.dtype == dtype
        ):
            return _spec(path, existing)
        try:
            # Only replace an array whose layout differs; tiles of one surface race to create
            # theirs, and an overwrite would drop chunks another tile has just written.
            with _writing(self.url, path):
                arr = self.root.create_array(
                    path,
                    shape=shape,
                    chunks=chunks,
                    dtype=dtype,
                    fill_value=fill_value,
                    overwrite=existing is not None,
                    config=_KEEP_EVERY_CHUNK,
                )
        except (zarr.errors.ContainsArrayError, zarr.errors.ContainsGroupError):
            arr = self._open(path)
            if (tuple(arr.shape), tuple(arr.chunks), arr.dtype) != (shape, chunks, dtype):
                raise self._corrupt(
                    path, "another writer created it with a different layout"
                ) from None
        return _spec(path, arr)

    def write(self, path: str, data: np.ndarray, chunks: Sequence[int] | None = None) -> ArraySpec:
        """Write a whole array at ``path``, replacing whatever was there."""
        with _writing(self.url, path):
            return self._write(path, data, chunks)

    def _write(self, path: str, data: np.ndarray, chunks: Sequence[int] | None) -> ArraySpec:
        data = np.asarray(data)
        chunk_shape = tuple(chunks) if chunks is not None else (data.shape or ())
        chunk_shape = tuple(max(1, int(c)) for c in chunk_shape)
        arr = self.root.create_array(
            path,
            shape=data.shape,
            chunks=chunk_shape,
            dtype=data.dtype,
            overwrite=True,
            config=_KEEP_EVERY_CHUNK,
        )
        arr[...] = data
        return _spec(path, arr)

    def write_block(self, path: str, selection: tuple[slice, ...], data: np.ndarray) -> None:
        """Write one block of an existing array (a task's own chunks)."""
        arr = self._open(path)
        with _writing(self.url, path):
            arr[selection] = data

    def read(self, path: str, selection: Any = Ellipsis) -> np.ndarray:
        """Read an array (or a selection of it); a missing or damaged one is a CorruptArray."""
        arr = self._open(path)
        try:
            return np.asarray(arr[selection])
        except Exception as err:
            raise self._corrupt(path, f"{type(err).__name__}: {err}") from None

    def verify(self, spec: ArraySpec, *, complete: bool = True) -> np.ndarray:
        """Check that the array exists with the recorded layout, decodes, and has every chunk;
        return its contents (decoding them is part of the check)."""
        arr = self._open(spec.path)
        if tuple(arr.shape) != tuple(spec.shape) or str(arr.dtype) != spec.dtype:
            raise self._corrupt(
                spec.path,
                f"it has shape {tuple(arr.shape)} and dtype {arr.dtype}, the row says "
                f"{tuple(spec.shape)} and {spec.dtype}",
            )
        if complete and arr.nchunks_initialized < arr.nchunks:
            raise self._corrupt(
                spec.path, f"only {arr.nchunks_initialized} of {arr.nchunks} chunks were written"
            )
        return self.read(spec.path)

    def damaged_blocks(self, spec: ArraySpec) -> list[tuple[tuple[int, ...], tuple[int, ...], str]]:
        """The chunks of an array that are missing or do not decode: (start, stop, why) each.

        An array whose metadata itself is unreadable (or of another layout) is damaged whole.
        """
        import itertools

        from zarr.core.sync import sync

        try:
            arr = self._open(spec.path)
            if tuple(arr.shape) != tuple(spec.shape) or str(arr.dtype) != spec.dtype:
                raise self._corrupt(spec.path, "its layout differs from the row's")
        except CorruptArray as err:
            return [((0,) * len(spec.shape), tuple(spec.shape), str(err))]
        damaged = []
        chunks = tuple(arr.chunks)
        for coords in itertools.product(*(range(n) for n in arr.cdata_shape)):
            start = tuple(c * k for c, k in zip(coords, chunks, strict=True))
            stop = tuple(min(a + k, n) for a, k, n in zip(start, chunks, arr.shape, strict=True))
            key = f"{arr.path}/{arr.metadata.encode_chunk_key(coords)}"
            if not sync(arr.store.exists(key)):
                damaged.append((start, stop, "chunk missing"))
                continue
            try:
                arr.get_block_selection(coords)
            except Exception as err:
                damaged.append((start, stop, f"chunk unreadable ({type(err).__name__})"))
        return damaged

    def exists(self, path: str) -> bool:
        return self._open(path, missing_ok=True) is not None

    def delete(self, path: str) -> None:
        if self.exists(path):
            del self.root[path]

    @overload
    def _open(self, path: str, *, missing_ok: Literal[False] = False) -> zarr.Array: ...

    @overload
    def _open(self, path: str, *, missing_ok: bool) -> zarr.Array | None: ...

    def _open(self, path: str, *, missing_ok: bool = False) -> zarr.Array | None:
        try:
            node = self.root[path]
        except KeyError:
            if missing_ok:
                return None
            raise self._corrupt(path, "it does not exist") from None
        except Exception as err:
            raise self._corrupt(
                path, f"its metadata is unreadable ({type(err).__name__}: {err})"
            ) from None
        if not isinstance(node, zarr.Array):
            raise self._corrupt(path, "it is a group, not an array")
        opened: zarr.Array = node.with_config(_KEEP_EVERY_CHUNK)
        return opened

    def _corrupt(self, path: str, why: str) -> CorruptArray:
        return CorruptArray(
            f"array {path!r} in the store {self.url} is unusable: {why}; "
            "run `tracker requeue --broken` to recompute it"
        )
