"""Read a PyTorch / Lightning checkpoint without running any code from it.

``torch.save`` writes a zip archive: ``<name>/data.pkl`` (a pickle of the object tree) and one file
``<name>/data/<key>`` per tensor storage. A pickle may name any importable callable and call it
(``os.system``, ``builtins.exec``, …), so a downloaded checkpoint is never given to ``pickle.load`` or
``torch.load(weights_only=False)``. :class:`SafeCheckpointReader` unpickles ``data.pkl`` with an
unpickler that

* imports nothing: every global it does not know becomes an inert :class:`Record` class (omegaconf
  configs, tokenizer objects, Lightning classes), which only stores the arguments and state the
  pickle gives it, so hyper-parameters can be read back as plain data (:func:`to_plain`);
* refuses, with :class:`UnsafeCheckpointError`, any reference to modules that execute code or touch
  the system (``os``, ``subprocess``, ``builtins.exec``/``eval``/``__import__``, ``importlib``, …): a
  model checkpoint never needs them, so their presence means the file is malicious or not a checkpoint;
* maps tensors to lazy :class:`TensorRef` records; :meth:`SafeCheckpointReader.tensor` reads only the
  storages asked for (the weights), never the optimizer state.

Only the zip format (torch ≥ 1.6, every Lightning checkpoint) is read; older formats are refused.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "CheckpointImportError",
    "Record",
    "SafeCheckpointReader",
    "TensorRef",
    "UnsafeCheckpointError",
    "to_plain",
]


class CheckpointImportError(ValueError):
    """A checkpoint that cannot be imported (unreadable, truncated, another architecture, inconsistent)."""


class UnsafeCheckpointError(CheckpointImportError):
    """A checkpoint whose pickle references code-executing or system globals; nothing was run."""


_DENIED_MODULES = (
    "os",
    "posix",
    "nt",
    "subprocess",
    "sys",
    "shutil",
    "importlib",
    "runpy",
    "socket",
    "pickle",
    "_pickle",
    "marshal",
    "ctypes",
    "code",
    "codeop",
    "pty",
    "commands",
    "platform",
    "webbrowser",
    "multiprocessing",
    "asyncio",
    "signal",
    "threading",
    "pdb",
    "timeit",
    "cProfile",
    "profile",
    "tempfile",
    "glob",
    "io",
    "_io",
)
_SAFE_BUILTINS = {
    "getattr",
    "set",
    "frozenset",
    "list",
    "dict",
    "tuple",
    "int",
    "float",
    "complex",
    "bool",
    "str",
    "bytes",
    "bytearray",
    "slice",
    "range",
    "object",
    "NoneType",
}
_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}


class Record:
    """Inert stand-in for an instance of a class the reader does not import. Holds what the pickle
    gave: ``rec_args`` (constructor / ``__new__`` arguments), ``rec_state`` (``__setstate__``),
    ``rec_items`` (list appends) and ``rec_dict`` (item assignments). Its class has ``rec_module``
    and ``rec_name``, the global the pickle named."""

    rec_module = ""
    rec_name = ""

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__.update(rec_args=args, rec_kwargs=kwargs, rec_state=None, rec_items=[], rec_dict={})
        return obj

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        self.__dict__["rec_state"] = state

    def append(self, item) -> None:
        self.rec_items.append(item)

    def extend(self, items) -> None:
        self.rec_items.extend(items)

    def __setitem__(self, key, value) -> None:
        self.rec_dict[key] = value

    def __repr__(self) -> str:
        return f"<record of {self.rec_module}.{self.rec_name}>"


@dataclass(frozen=True)
class TensorRef:
    """A tensor in the archive, not yet read: storage ``key``, ``dtype``, element ``offset``, ``size``
    and ``stride`` (elements)."""

    key: str
    dtype: torch.dtype
    offset: int
    size: tuple
    stride: tuple

    @property
    def shape(self) -> tuple:
        return tuple(self.size)


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: torch.dtype


def _rebuild_tensor(storage, storage_offset, size, stride, *_unused):
    if not isinstance(storage, _StorageRef):
        raise CheckpointImportError(f"malformed tensor record (storage {type(storage).__name__})")
    return TensorRef(
        storage.key,
        storage.dtype,
        int(storage_offset),
        tuple(int(s) for s in size),
        tuple(int(s) for s in stride),
    )


def _rebuild_parameter(data, *_unused):
    return data


def _rebuild_from_type_v2(func, _new_type, args, _state):
    if func not in (_rebuild_tensor, _rebuild_parameter):
        raise CheckpointImportError(f"unsupported tensor subclass record {func!r}")
    return func(*args)


def _reconstructor(cls, base, state):
    """``copyreg._reconstructor`` (protocol 0/1 objects), for stand-in records and plain containers only."""
    if isinstance(cls, type) and issubclass(cls, Record):
        obj = cls.__new__(cls)
        if state is not None:
            obj.__setstate__(state)
        return obj
    if cls in (dict, list, set, tuple, collections.OrderedDict) and base is cls:
        return cls() if state is None else cls(state)
    raise CheckpointImportError(f"unsupported object reconstruction of {cls!r:.80}")


_ALLOWED = {
    ("copyreg", "_reconstructor"): _reconstructor,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
}


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str) -> None:
        super().__init__(file)
        self.source = source
        self.records: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str):
        top = module.split(".")[0]
        if (
            (module in ("builtins", "__builtin__") and name not in _SAFE_BUILTINS)
            or top in _DENIED_MODULES
            or module in _DENIED_MODULES
        ):
            raise UnsafeCheckpointError(
                f"refusing to load {self.source}: its pickle references {module}.{name}, which can run "
                f"code or touch the system; a model checkpoint never needs it (the file is malicious or "
                f"not a checkpoint). Nothing from it was executed."
            )
        if module in ("builtins", "__builtin__"):
            import builtins

            if (
                name == "getattr"
            ):  # (getattr, (obj, "attr")) for bound methods: kept as a record, never looked up
                return self._record_class(module, name)
            return getattr(builtins, name) if name != "NoneType" else type(None)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "_codecs" and name == "encode":  # bytes in protocol-2 pickles
            import codecs

            return codecs.encode
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return self._record_class(module, name)

    def _record_class(self, module: str, name: str) -> type:
        key = (module, name)
        if key not in self.records:
            self.records[key] = type(
                name.replace(".", "_"), (Record,), {"rec_module": module, "rec_name": name}
            )
        return self.records[key]

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage" or len(pid) < 3:
            raise CheckpointImportError(f"{self.source}: unsupported persistent record {pid!r:.80}")
        storage_type, key = pid[1], str(pid[2])
        if isinstance(storage_type, _StorageType):
            dtype = storage_type.dtype
        elif isinstance(storage_type, torch.dtype):
            dtype = storage_type
        else:
            raise CheckpointImportError(f"{self.source}: unsupported storage type {storage_type!r:.80}")
        return _StorageRef(key, dtype)


class SafeCheckpointReader:
    """Open a ``torch.save`` zip archive and read it safely.

    >>> reader = SafeCheckpointReader("checkpoint.ckpt")
    >>> tree = reader.load()                       # dicts, lists, Records, TensorRefs
    >>> w = reader.tensor(tree["state_dict"]["backbone.vocab_embed.embedding"])

    Raises :class:`CheckpointImportError` for a file that is not a complete archive (truncated
    download) and :class:`UnsafeCheckpointError` for a pickle that references code-executing globals.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"checkpoint {str(self.path)!r} does not exist")
        try:
            self.zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as err:
            raise CheckpointImportError(
                f"{self.path} is not a complete PyTorch checkpoint archive ({err}): a truncated download, "
                f"or a pre-1.6 torch.save file (re-save it with a current torch)"
            ) from None
        names = [n for n in self.zip.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not names:
            raise CheckpointImportError(
                f"{self.path} is a zip file but not a torch.save archive (no data.pkl)"
            )
        self.prefix = names[0][: -len("data.pkl")]
        order = self.prefix + "byteorder"
        if order in self.zip.namelist() and self.zip.read(order).decode().strip() != "little":
            raise CheckpointImportError(f"{self.path} was written on a big-endian machine; not supported")

    def load(self):
        """The object tree of ``data.pkl`` (nothing executed; tensors as :class:`TensorRef`)."""
        try:
            data = self.zip.read(self.prefix + "data.pkl")
            return _SafeUnpickler(io.BytesIO(data), str(self.path)).load()
        except CheckpointImportError:
            raise
        except (
            zipfile.BadZipFile,
            EOFError,
            pickle.UnpicklingError,
            OSError,
            ValueError,
            TypeError,
            AttributeError,
            IndexError,
            KeyError,
        ) as err:
            raise CheckpointImportError(
                f"{self.path}: cannot read its object tree ({type(err).__name__}: {err}); "
                f"the file is truncated or corrupted"
            ) from None

    def tensor(self, ref: TensorRef) -> torch.Tensor:
        """Read one tensor (a copy, float/int dtype as stored)."""
        if not isinstance(ref, TensorRef):
            raise CheckpointImportError(f"{self.path}: expected a tensor, found {type(ref).__name__}")
        try:
            raw = self.zip.read(f"{self.prefix}data/{ref.key}")
        except (KeyError, zipfile.BadZipFile, OSError, EOFError) as err:
            raise CheckpointImportError(
                f"{self.path}: tensor storage {ref.key} is missing or damaged ({err}); "
                f"the file is truncated or corrupted"
            ) from None
        itemsize = torch.empty((), dtype=ref.dtype).element_size()
        flat = torch.frombuffer(bytearray(raw), dtype=ref.dtype) if raw else torch.empty(0, dtype=ref.dtype)
        need = (
            ref.offset + sum((s - 1) * st for s, st in zip(ref.size, ref.stride)) + 1 if all(ref.size) else 0
        )
        if flat.numel() < need or len(raw) % itemsize:
            raise CheckpointImportError(
                f"{self.path}: tensor storage {ref.key} is too short for shape {ref.size}"
            )
        return flat.as_strided(ref.size, ref.stride, ref.offset).clone()


def to_plain(obj, _depth: int = 0):
    """Records of configuration objects → plain dicts / lists / scalars.

    omegaconf containers keep their content in the state key ``_content`` and value nodes in ``_val``;
    dict-like records (``AttributeDict``) in their item assignments. Other records are returned as
    they are (inert)."""
    if _depth > 100:
        raise CheckpointImportError("hyper-parameters nest too deeply")
    if isinstance(obj, Record):
        state = obj.rec_state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = {**state[0], **(state[1] or {})}
        if isinstance(state, dict) and "_content" in state:
            return to_plain(state["_content"], _depth + 1)
        if isinstance(state, dict) and "_val" in state:
            return to_plain(state["_val"], _depth + 1)
        if obj.rec_dict:
            return {to_plain(k, _depth + 1): to_plain(v, _depth + 1) for k, v in obj.rec_dict.items()}
        if obj.rec_items:
            return [to_plain(v, _depth + 1) for v in obj.rec_items]
        return obj
    if isinstance(obj, dict):
        return {
            to_plain(k, _depth + 1) if not isinstance(k, Record) else repr(k): to_plain(v, _depth + 1)
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [to_plain(v, _depth + 1) for v in obj]
    return obj
