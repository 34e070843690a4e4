"""Reading and writing CLIP checkpoints in OpenAI's released format, without ever running one.

Read: a TorchScript archive (only its weights, read from its pickle without torch.jit) or a ``torch.save``'d
state dict, possibly nested under ``state_dict``/``model`` and with a ``module.`` prefix.
Write: ``save_checkpoint`` (TorchScript archive holding fp16 weights, or a plain state dict).
"""
import os
import re
import tempfile
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from .archive_reader import ArchiveReadError, UnsafeArchiveError, read_torchscript_weights
from .model import EXTRA_KEYS, RESNET_KEYS, TEXT_KEYS, VIT_KEYS, CheckpointFormatError, infer_config

EXPECTED = ("expected one of OpenAI's released CLIP checkpoints (a TorchScript archive such as ViT-B-16.pt) "
            "or a torch.save'd CLIP state dict with OpenAI's key names")


def _unwrap(obj):
    """The state dict inside a checkpoint: follows ``state_dict``/``model`` nesting, strips ``module.``."""
    for _ in range(3):
        if isinstance(obj, dict) and not _looks_like_clip(obj):
            inner = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict):
        return obj
    if obj and all(isinstance(k, str) and k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _looks_like_clip(state_dict):
    stripped = {k[len("module."):] if isinstance(k, str) and k.startswith("module.") else k for k in state_dict}
    return all(k in stripped for k in TEXT_KEYS) and (
        all(k in stripped for k in VIT_KEYS) or all(k in stripped for k in RESNET_KEYS))


def archive_problem(path):
    """What a file that should be a torch archive is instead, as a noun phrase, or None when nothing
    obvious: an empty file, or a zip archive cut short (a copy or download that did not finish)."""
    path = Path(path)
    if path.stat().st_size == 0:
        return "an empty file"
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        return "a zip archive cut short (truncated, as by a copy or download that did not finish)"
    return None


def check_archive(path):
    """Raise ``CheckpointFormatError`` if a member of a zip archive (what ``torch.save`` and TorchScript
    write) fails its CRC-32: bytes changed inside the file, by a failing disk or a bad copy, which
    ``torch.load`` reads without noticing. Reads the whole file; files that are not zip archives pass
    (``read_state_dict`` judges them)."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, ValueError) as error:
        raise CheckpointFormatError(f"{path}: a damaged zip archive ({error}); copy or download it again") from None
    if bad is not None:
        raise CheckpointFormatError(f"{path}: damaged: the archive's member {bad} fails its CRC check (bytes "
                                    f"changed inside the file); copy or download it again")


def has_torchscript_layout(names):
    """Whether a zip archive's member ``names`` have TorchScript's layout: ``<name>/code/`` or
    ``<name>/constants.pkl`` (``torch.save`` writes neither)."""
    return any(len(parts) > 1 and parts[1] in ("code", "constants.pkl") for parts in (n.split("/") for n in names))


def is_torchscript_archive(path):
    """Whether the file at ``path`` is a zip archive of TorchScript's layout (``has_torchscript_layout``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False
    return has_torchscript_layout(names)


def _first_line(error):
    """The first line of an exception's message, without terminal colour codes, at most 300 characters."""
    return re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().split("\n")[0][:300]


def _torchscript_state_dict(path):
    """State dict of the TorchScript archive at ``path``, read from the archive's pickle without
    torch.jit (``read_torchscript_weights``, which runs nothing); ``torch.jit.load`` only where that
    reader does not understand the archive (a layout it does not know, or damage: then torch.jit.load
    judges it) or refuses a global its pickle names (an archive of a torch version whose pickles name
    one more than the reader allows), with a warning: torch.jit.load, which OpenAI's clip uses on every
    archive, runs the TorchScript ``__setstate__`` of an archive's classes, so a crafted file can choose
    to be read that way. Where torch.jit.load fails too, the reader's refusal or reason is the error."""
    try:
        return read_torchscript_weights(path)
    except (ArchiveReadError, UnsafeArchiveError) as reader_error:
        jit_load = getattr(torch.jit, "load", None)
        refused = isinstance(reader_error, UnsafeArchiveError)
        if jit_load is None:  # a torch without torch.jit.load
            if refused:
                raise
            raise CheckpointFormatError(f"{path}: a damaged TorchScript archive: {reader_error.reason}; "
                                        f"copy or download it again") from None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated
                state_dict = jit_load(str(path), map_location="cpu").state_dict()  # the graph is never run
        except Exception as jit_error:  # RuntimeError mostly; what a damaged archive raises varies
            if refused:
                raise reader_error from None
            raise CheckpointFormatError(
                f"{path}: a damaged TorchScript archive: torch.jit.load fails ({type(jit_error).__name__}: "
                f"{_first_line(jit_error)}), and so does reading its weights without it "
                f"({reader_error.reason}); copy or download it again") from None
        warnings.warn(f"{path}: read with torch.jit.load, as OpenAI's clip reads every archive, since its weights "
                      f"could not be read without it ({getattr(reader_error, 'reason', reader_error)}); "
                      f"torch.jit.load runs the TorchScript code an archive holds for its classes' __setstate__: "
                      f"load checkpoints you trust", stacklevel=3)
        return state_dict


def read_state_dict(path):
    """State dict of a CLIP checkpoint file (tensors on the CPU); CheckpointFormatError if it is none.

    A TorchScript archive's weights are read from its pickle as stored (fp16 stays fp16), without
    torch.jit and without running anything in the archive (``_torchscript_state_dict``); any other
    file with ``torch.load(weights_only=True)``.
    """
    path = Path(path)
    if is_torchscript_archive(path):
        obj = _torchscript_state_dict(path)
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as error:  # unpickling errors have many types
            if zipfile.is_zipfile(path):  # a torch.save archive holding more than tensors and plain containers
                detail = (f"a zip archive that torch.load(weights_only=True) refuses "
                          f"({type(error).__name__}: {_first_line(error)})")
            else:
                detail = archive_problem(path) or (f"a file that is not a zip archive, while TorchScript and "
                                                   f"torch.save write zip archives ({type(error).__name__})")
            raise CheckpointFormatError(f"{path}: not a CLIP checkpoint, {EXPECTED}; found {detail}") from None
    state_dict = _unwrap(obj)
    if not isinstance(state_dict, dict):
        raise CheckpointFormatError(f"{path}: not a CLIP checkpoint, {EXPECTED}; it holds a {type(obj).__name__}")
    if not _looks_like_clip(state_dict):
        keys = ", ".join(map(str, list(state_dict)[:5])) + (", …" if len(state_dict) > 5 else "")
        raise CheckpointFormatError(
            f"{path}: not a CLIP checkpoint, {EXPECTED} (keys such as {', '.join(TEXT_KEYS)}); "
            f"found {len(state_dict)} keys ({keys or 'none'})")
    bad = [str(k) for k, v in state_dict.items() if not isinstance(v, torch.Tensor) and k not in EXTRA_KEYS]
    if bad:
        raise CheckpointFormatError(
            f"{path}: not a CLIP checkpoint, {EXPECTED}; expected a tensor under every key, "
            f"found other values under {', '.join(bad[:5])}")
    return state_dict


class _Holder(nn.Module):
    """A module whose only job is to carry tensors under dotted names inside a TorchScript archive."""

    def forward(self) -> int:
        return 0


def _holder_for(state_dict):
    root = _Holder()
    for key, tensor in state_dict.items():
        *parents, leaf = key.split(".")
        module = root
        for name in parents:
            if not hasattr(module, name):
                module.add_module(name, _Holder())
            module = getattr(module, name)
        module.register_buffer(leaf, tensor)
    return root


def new_file_mode():
    """The permissions a newly created file gets under the process's umask (0o666 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = new_file_mode()


def atomic_write(path, write):
    """Call ``write(binary_file)`` on a temporary file beside ``path``, sync it, rename it to ``path``, and
    sync the folder.

    A reader never sees a half-written file; the file gets the permissions of a newly created one.
    The project's one writer of files that must not be lost (checkpoints, run files, caches).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; give the usual permissions of a new file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _sync_folder(path.parent)  # the rename itself survives a power cut
    return path


def _sync_folder(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # a platform or file system that cannot open a folder
    try:
        os.fsync(fd)
    except OSError:
        pass  # one that cannot sync it
    finally:
        os.close(fd)


def save_checkpoint(model, path, fmt="torchscript"):
    """Write ``model`` (a clip.model.CLIP) to ``path`` atomically; returns the Path.

    ``fmt="torchscript"``: OpenAI's released format, a TorchScript archive whose
    ``state_dict()`` holds the weights in fp16 under OpenAI's key names (plus the
    ``input_resolution``, ``context_length`` and ``vocab_size`` entries released
    archives carry). ``fmt="state_dict"``: ``torch.save`` of the state dict as it is.
    """
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}  # name -> tensor
    if fmt == "state_dict":
        return atomic_write(path, lambda f: torch.save(state_dict, f))
    if fmt != "torchscript":
        raise ValueError(f"save_checkpoint: fmt={fmt!r}, expected 'torchscript' or 'state_dict'")
    config = infer_config(state_dict)
    archive = {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}
    archive["input_resolution"] = torch.tensor(config["image_resolution"])
    archive["context_length"] = torch.tensor(config["context_length"])
    archive["vocab_size"] = torch.tensor(config["vocab_size"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(_holder_for(archive))
        return atomic_write(path, lambda f: torch.jit.save(scripted, f))

