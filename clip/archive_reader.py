"""The weights of a TorchScript archive, read without TorchScript (``torch.jit`` is not used).

A TorchScript archive (OpenAI's released CLIP files, ``clip.save_checkpoint``'s default) is a zip
file under one folder, ``<name>/``: ``data.pkl`` (the module tree, pickled), ``constants.pkl``,
``version``, ``code/`` (the modules' TorchScript source) and ``data/<key>`` (the tensors' bytes).
``read_torchscript_weights`` unpickles ``data.pkl`` with an unpickler that builds nothing but
stand-ins for the archive's classes, tensors, ordered dicts and plain lists, reads the declarations
of parameters and buffers from ``code/`` as text, and returns what ``torch.jit.load(path).state_dict()``
returns. Nothing in the archive is run.
"""
import ast
import collections
import pickle
import sys
import zipfile
import zlib

import torch

from .model import CheckpointFormatError


class ArchiveReadError(CheckpointFormatError):
    """The archive is not one this reader understands: a member missing or damaged, or a layout it
    does not know (``torch.jit.load`` may still read it). ``reason`` says which, without the path."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: its weights cannot be read without torch.jit: {reason}")
        self.reason = reason


class _Unreadable(Exception):
    """Raised inside the reader with a reason; ``read_torchscript_weights`` turns it into an
    ``ArchiveReadError`` that names the file."""


class UnsafeArchiveError(CheckpointFormatError):
    """The archive's pickle names a Python object that weights never need (``os.system``, say):
    refused, and nothing is called."""


# The dtype of each storage class a pickle may name (the classes themselves are never used).
STORAGE_DTYPES = {
    "HalfStorage": torch.float16, "FloatStorage": torch.float32, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "UntypedStorage": torch.uint8,
}
# The dtypes a pickle may name, as ``torch.<name>``.
DTYPES = {name: getattr(torch, name) for name in (
    "float16", "half", "float32", "float", "float64", "double", "bfloat16", "complex64", "complex128",
    "int64", "long", "int32", "int", "int16", "short", "int8", "uint8", "bool")}


class _StorageType:
    """What a pickle's ``torch.<X>Storage`` global stands for here: the dtype of its elements."""

    def __init__(self, dtype):
        self.dtype = dtype


class _ScriptObject:
    """Stand-in for an instance of one of the archive's TorchScript classes (``__torch__.*``): keeps
    the class's qualified name and the state that the pickle gives it (its attributes, by name)."""

    qualified_name = None

    def __setstate__(self, state):
        self.state = state


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    """``torch._utils._rebuild_tensor_v2`` for this reader: a view of ``storage`` (an
    ``(untyped storage, dtype)`` pair from ``persistent_load``); no hooks, no metadata."""
    if not isinstance(storage, tuple) or backward_hooks or metadata:
        raise _Unreadable("a tensor with backward hooks or metadata, or without a storage")
    untyped, dtype = storage
    size, stride = tuple(size), tuple(stride)
    if not (isinstance(storage_offset, int) and storage_offset >= 0 and len(size) == len(stride)
            and all(isinstance(n, int) and n >= 0 for n in size + stride)):
        raise _Unreadable(f"a tensor of offset {storage_offset!r}, size {size!r}, stride {stride!r}")
    if all(size):  # its last element lies within the storage (set_ would grow the storage, uninitialised)
        end = storage_offset + sum((n - 1) * step for n, step in zip(size, stride)) + 1  # elements
        if end * dtype.itemsize > untyped.nbytes():
            raise _Unreadable(f"a tensor of size {size} reaching past its storage of {untyped.nbytes()} bytes")
    return torch.empty((0,), dtype=dtype).set_(untyped, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    """``torch._utils._rebuild_parameter`` for this reader: the tensor itself (a state dict holds
    tensors, not parameters)."""
    if not isinstance(data, torch.Tensor) or backward_hooks:
        raise _Unreadable("a parameter that is not a tensor, or one with backward hooks")
    return data


def _same(value):
    """``torch.jit._pickle.build_intlist`` and its kind: TorchScript's typed lists, plain lists here."""
    return value


def _restore_type_tag(value, type_str):
    """``torch.jit._pickle.restore_type_tag``: TorchScript's typed lists and dicts, plain ones here."""
    return value


# The Python objects an archive's pickle may name, as (module, name) -> what this reader uses instead.
ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch.jit._pickle", "restore_type_tag"): _restore_type_tag,
    **{("torch.jit._pickle", f"build_{kind}list"): _same for kind in ("int", "double", "bool", "tensor")},
}


def _fresh(fn):
    """A new function that calls ``fn``: what one unpickler hands out for an allowed global, so that
    attributes a crafted pickle sets on it (``__defaults__``, say) never reach ``fn`` or another file."""
    def call(*args, **kwargs):
        return fn(*args, **kwargs)
    return call


class _WeightsUnpickler(pickle.Unpickler):
    """Unpickles a TorchScript archive's ``data.pkl``: the archive's classes become ``_ScriptObject``s,
    tensors are read from ``data/<key>``; any other global is refused (``UnsafeArchiveError``)."""

    def __init__(self, file, archive, folder, path):
        super().__init__(file)
        self.archive, self.folder, self.path = archive, folder, path
        # a fresh callable for each allowed global: state a pickle sets on one (BUILD) stays in this unpickler
        self.allowed = {key: _fresh(fn) for key, fn in ALLOWED.items()}
        self.storages = {}  # key -> untyped storage (tensors that share one share it here too)
        self.classes = {}  # qualified name -> _ScriptObject subclass

    def find_class(self, module, name):
        if module == "__torch__" or module.startswith("__torch__."):
            qualified = f"{module}.{name}"
            if qualified not in self.classes:
                self.classes[qualified] = type(name, (_ScriptObject,), {"qualified_name": qualified})
            return self.classes[qualified]
        if (module, name) in self.allowed:
            return self.allowed[module, name]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        if module == "torch" and name in DTYPES:
            return DTYPES[name]
        raise UnsafeArchiveError(
            f"{self.path}: refused: its {self.folder}/data.pkl names {module}.{name}, which a checkpoint's "
            f"weights never need (only tensors, ordered dicts and the archive's own classes); nothing in the "
            f"archive was run. Is this file one of OpenAI's CLIP checkpoints?")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise _Unreadable(f"an unknown persistent id in data.pkl: {pid!r:.100}")
        _, storage_type, key, _location, numel = pid  # read onto the CPU wherever it was saved
        if key not in self.storages:
            member = f"{self.folder}/data/{key}"
            try:
                data = self._read_member(member)
            except KeyError:
                raise _Unreadable(f"the member {member} is missing") from None
            nbytes = numel * storage_type.dtype.itemsize
            if len(data) != nbytes:
                raise _Unreadable(f"the member {member} holds {len(data)} bytes, not {nbytes}")
            self.storages[key] = data.untyped_storage() if len(data) else torch.UntypedStorage(0)
        return self.storages[key], storage_type.dtype

    def _read_member(self, member):
        """The bytes of a member, as a uint8 tensor [nbytes]. torch writes tensors uncompressed: those are
        read straight from the file into one buffer. (zipfile's read copied them twice and checked their
        CRC: three times torch.jit.load's time on a ViT-B/16 archive. torch.jit.load checks no CRC either,
        and a run checks the whole archive's CRCs the first time it hashes the file.) The member's local
        header must name it: a directory entry pointing at another member's bytes is refused."""
        info = self.archive.getinfo(member)
        if info.compress_type != zipfile.ZIP_STORED:
            data = bytearray(self.archive.read(member))
            return torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
        raw = self.archive.fp  # the archive's open file
        raw.seek(info.header_offset)
        header = raw.read(30)  # the member's local header: its name's and extra field's lengths at 26 and 28
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise _Unreadable(f"the member {member}'s local header is damaged")
        name_length = int.from_bytes(header[26:28], "little")
        if raw.read(name_length) != info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437"):
            raise _Unreadable(f"the member {member}'s local header names another member")
        raw.seek(info.header_offset + 30 + name_length + int.from_bytes(header[28:30], "little"))
        data = torch.empty(info.file_size, dtype=torch.uint8)  # not zeroed: read into at once
        if info.file_size and raw.readinto(memoryview(data.numpy())) != info.file_size:
            raise _Unreadable(f"the member {member} is cut short")
        return data


class _Declarations:
    """Which attributes of each module class are parameters and buffers, as the class definitions in
    the archive's ``code/`` folder declare them (``__parameters__ = [...]``, ``__buffers__ = [...]``).
    The source is parsed (``ast``), never run."""

    def __init__(self, archive, folder):
        self.archive, self.folder = archive, folder
        self.classes = {}  # qualified name -> (is a module, parameter names, buffer names)

    def __call__(self, qualified_name):
        """(whether the class is a module, its parameters' names, its buffers' names)."""
        if qualified_name not in self.classes:
            self._parse(qualified_name.rpartition(".")[0])
            if qualified_name not in self.classes:
                raise _Unreadable(f"no definition of {qualified_name} in the archive's code")
        return self.classes[qualified_name]

    def _parse(self, module):
        member = f"{self.folder}/code/{module.replace('.', '/')}.py"
        try:
            tree = ast.parse(self.archive.read(member).decode("utf-8"), filename=member)
        except KeyError:
            raise _Unreadable(f"the member {member} is missing") from None
        for node in tree.body:
            if not isinstance(node, ast.ClassDef):
                continue
            is_module = any(isinstance(base, ast.Name) and base.id == "Module" for base in node.bases)
            lists = {}
            for item in node.body:
                if (isinstance(item, ast.Assign) and len(item.targets) == 1 and isinstance(item.targets[0], ast.Name)
                        and item.targets[0].id in ("__parameters__", "__buffers__")):
                    lists[item.targets[0].id] = ast.literal_eval(item.value)
            if is_module and not all(isinstance(lists.get(k), list) for k in ("__parameters__", "__buffers__")):
                raise _Unreadable(f"the class {module}.{node.name} in {member} declares no "
                                  f"__parameters__ and __buffers__ lists")
            self.classes[f"{module}.{node.name}"] = (is_module, lists.get("__parameters__", []),
                                                    lists.get("__buffers__", []))


def _collect(obj, prefix, declarations, state_dict, seen=()):
    """Add the parameters, then the buffers, then the submodules' entries of the module ``obj`` to
    ``state_dict`` under dotted names, in the order of ``torch.nn.Module.state_dict``."""
    if id(obj) in seen:
        raise _Unreadable(f"a module that contains itself ({prefix or 'the top module'})")
    state = getattr(obj, "state", None)
    if not isinstance(state, dict):
        raise _Unreadable(f"the module {prefix or 'at the top'} ({obj.qualified_name}) has no attributes")
    is_module, parameters, buffers = declarations(obj.qualified_name)
    if not is_module:
        raise _Unreadable(f"{prefix or 'the top object'} ({obj.qualified_name}) is not a module")
    for names in (parameters, buffers):
        for name in names:
            if name not in state:
                raise _Unreadable(f"{prefix}{name}, declared by {obj.qualified_name}, is missing")
            value = state[name]
            if value is None:  # an unset parameter or buffer (a Linear without bias): not in a state dict
                continue
            if not isinstance(value, torch.Tensor):
                raise _Unreadable(f"{prefix}{name} is a {type(value).__name__}, not a tensor")
            state_dict[prefix + name] = value
    for name, value in state.items():
        if isinstance(value, _ScriptObject) and declarations(value.qualified_name)[0]:
            _collect(value, f"{prefix}{name}.", declarations, state_dict, seen + (id(obj),))


def read_torchscript_weights(path):
    """The state dict (an OrderedDict of CPU tensors, as stored: fp16 stays fp16) of the TorchScript
    archive at ``path``, equal to ``torch.jit.load(path, map_location="cpu").state_dict()``.

    Which tensor attributes are state: TorchScript keeps a module's parameters and buffers as
    attributes of its class, beside other attributes (a tensor held as a plain attribute, like a
    ResidualAttentionBlock's ``attn_mask`` in some models, is none); its class definition in ``code/``
    lists the parameters and buffers, and ``torch.jit.load`` takes that list to build ``state_dict()``.
    This reader takes the same list, so it keeps what ``torch.jit.load`` keeps for any module (not only
    CLIP's keys) and drops the rest. A buffer saved as non-persistent is kept, as TorchScript keeps it.

    Raises ``UnsafeArchiveError`` if ``data.pkl`` names anything beyond tensors, ordered dicts, typed
    lists and the archive's own classes, ``ArchiveReadError`` if the archive is damaged or laid out
    otherwise (a missing member, a cut pickle, a tensor past its storage, an undeclared module class;
    the bytes of uncompressed tensors are not CRC-checked here, as torch.jit.load does not check them).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            folders = {n.split("/")[0] for n in names if n.count("/") == 1 and n.endswith("/data.pkl")}
            if len(folders) != 1:
                raise _Unreadable(f"expected one <name>/data.pkl, found {len(folders)}")
            folder = folders.pop()
            for member in ("constants.pkl", "version"):
                if f"{folder}/{member}" not in names:
                    raise _Unreadable(f"the member {folder}/{member} is missing")
            if f"{folder}/byteorder" in names and archive.read(f"{folder}/byteorder").decode() != sys.byteorder:
                raise _Unreadable("tensors stored in the other byte order")
            with archive.open(f"{folder}/data.pkl") as file:
                unpickler = _WeightsUnpickler(file, archive, folder, path)
                top = unpickler.load()
            if not isinstance(top, _ScriptObject):
                raise _Unreadable(f"{folder}/data.pkl holds a {type(top).__name__}, not a module")
            state_dict = collections.OrderedDict()
            _collect(top, "", _Declarations(archive, folder), state_dict)
            return state_dict
    except _Unreadable as error:
        raise ArchiveReadError(path, str(error)) from None
    except UnsafeArchiveError:
        raise
    except (zipfile.BadZipFile, zlib.error, pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError,
            KeyError, AttributeError, IndexError, SyntaxError, RuntimeError, MemoryError) as error:
        raise ArchiveReadError(path, f"{type(error).__name__}: {error}") from None
