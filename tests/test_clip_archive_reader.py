"""TorchScript archives' weights read from their pickle without torch.jit (clip/archive_reader.py): the
same state dict as torch.jit.load, what clip.load uses, and archives naming other Python objects refused."""
import collections
import re
import struct
import warnings
import zipfile
from typing import Dict, List

import pytest
import torch
from torch import nn

import clip
from clip import archive_reader, checkpoint
from clip.archive_reader import ArchiveReadError, UnsafeArchiveError, read_torchscript_weights
from tiny_clip import make_tiny_clip, write_openai_style_archive, write_tiny_clip

KINDS = ("vit", "resnet", "openai-vit", "openai-resnet")


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """Each kind of archive -> its path: the project's writer (clip.save_checkpoint) for a tiny ViT and ResNet,
    and OpenAI's released layout (a traced fp16 CLIP with three extra tensors) for both."""
    folder = tmp_path_factory.mktemp("archives")
    return {"vit": write_tiny_clip(folder / "vit.pt", arch="vit"),
            "resnet": write_tiny_clip(folder / "resnet.pt", arch="resnet"),
            "openai-vit": write_openai_style_archive(folder / "openai-vit.pt", make_tiny_clip("vit")),
            "openai-resnet": write_openai_style_archive(folder / "openai-resnet.pt", make_tiny_clip("resnet"))}


def jit_state_dict(path):
    """The reference: what torch.jit.load gives."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu").state_dict()


def assert_same_state_dict(ours, reference):
    assert list(ours) == list(reference)  # the same keys, in the same order
    for key, value in reference.items():
        assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
        assert torch.equal(ours[key], value), key


@pytest.fixture
def no_jit_load(monkeypatch):
    """torch.jit.load raises if called."""
    def refuse(*args, **kwargs):
        raise AssertionError("torch.jit.load was called")

    monkeypatch.setattr(torch.jit, "load", refuse)


def copy_with(source, target, replace):
    """Copy the zip archive ``source`` to ``target``, with ``replace`` {member name suffix: new bytes or None
    (left out)} -> target."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            suffix = next((s for s in replace if info.filename.endswith(s)), None)
            if suffix is None:
                new.writestr(info, old.read(info))
            elif replace[suffix] is not None:
                new.writestr(info, replace[suffix])
    return target


# ---------------------------------------------------------------------------
# The reader gives what torch.jit.load gives.

@pytest.mark.parametrize("kind", KINDS)
def test_reader_gives_the_state_dict_of_torch_jit_load(kind, archives):
    ours = read_torchscript_weights(archives[kind])
    reference = jit_state_dict(archives[kind])
    assert_same_state_dict(ours, reference)
    assert {"input_resolution", "context_length", "vocab_size"} <= set(ours)  # released archives carry them
    assert all(v.dtype == torch.float16 for v in ours.values() if v.is_floating_point())  # as stored
    assert not any(v.requires_grad for v in ours.values())


class _Attributes(nn.Module):
    """A module whose TorchScript class holds, beside its state, a plain tensor attribute (not state, as
    ResidualAttentionBlock's attn_mask is in some CLIPs), typed lists and a dict, a non-persistent buffer
    (state for TorchScript), a None buffer and a Linear without bias."""

    def __init__(self):
        super().__init__()
        self.mask = torch.full((3, 3), float("-inf")).triu(1)
        self.sizes: List[int] = [1, 2]
        self.scales: List[float] = [0.5]
        self.tensors: List[torch.Tensor] = [torch.ones(2)]
        self.names: Dict[str, int] = {"a": 1}
        self.register_buffer("scratch", torch.arange(4.0), persistent=False)
        self.register_buffer("unset", None)
        self.proj = nn.Linear(3, 2, bias=False)

    def forward(self, x):
        return self.proj(x + self.mask[0] + self.sizes[0] + self.scales[0] + self.tensors[0].sum()
                         + self.scratch.sum() + self.names["a"])


def scripted_archive(module, path):
    """``module`` scripted and saved by torch.jit at ``path`` -> path."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(module), str(path))
    return path


def test_reader_keeps_the_attributes_torchscript_declares_as_state_and_only_those(tmp_path):
    path = scripted_archive(_Attributes(), tmp_path / "attributes.pt")
    ours = read_torchscript_weights(path)
    assert_same_state_dict(ours, jit_state_dict(path))
    assert list(ours) == ["scratch", "proj.weight"]  # not mask, tensors, unset, proj.bias


def test_tensors_sharing_a_storage_share_it(tmp_path):
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            whole = torch.arange(12.0)
            self.register_buffer("whole", whole)
            self.register_buffer("tail", whole[4:].view(2, 4))

        def forward(self):
            return self.whole + 1

    path = scripted_archive(Shared(), tmp_path / "shared.pt")
    ours = read_torchscript_weights(path)
    assert_same_state_dict(ours, jit_state_dict(path))
    assert ours["tail"].untyped_storage().data_ptr() == ours["whole"].untyped_storage().data_ptr()
    assert ours["tail"].storage_offset() == 4


# ---------------------------------------------------------------------------
# clip.load and read_state_dict use it: torch.jit.load is not called, and nothing warns.

@pytest.mark.parametrize("kind", KINDS)
def test_loading_an_archive_does_not_call_torch_jit_load_nor_warn(kind, archives, monkeypatch):
    reference = jit_state_dict(archives[kind])
    calls = []

    def spy(*args, **kwargs):
        calls.append(args)
        raise AssertionError("torch.jit.load was called")

    monkeypatch.setattr(torch.jit, "load", spy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state_dict = clip.read_state_dict(archives[kind])
        model, _ = clip.load(str(archives[kind]), device="cpu")
    assert calls == []
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
    assert_same_state_dict(state_dict, reference)
    weights = model.state_dict()
    assert set(weights) == set(reference) - {"input_resolution", "context_length", "vocab_size"}
    assert all(torch.equal(weights[k], reference[k].to(weights[k].dtype)) for k in weights)


def test_loading_works_in_a_torch_without_torch_jit_load(archives, monkeypatch):
    monkeypatch.delattr(torch.jit, "load")
    model, _ = clip.load(str(archives["openai-vit"]), device="cpu", jit=False)
    assert isinstance(model, clip.CLIP)


def test_build_model_takes_the_readers_state_dict(archives):
    model = clip.build_model(read_torchscript_weights(archives["openai-resnet"]))
    reference = jit_state_dict(archives["openai-resnet"])
    weights = model.state_dict()
    assert all(torch.equal(weights[k], reference[k].to(weights[k].dtype)) for k in weights)


def test_jit_true_still_warns_and_loads_through_the_reader(archives, no_jit_load):
    with pytest.warns(UserWarning, match="jit=True"):
        model, _ = clip.load(str(archives["vit"]), device="cpu", jit=True)
    assert isinstance(model, clip.CLIP)


def test_a_global_the_reader_does_not_allow_falls_back_to_torch_jit_load(archives, monkeypatch):
    """An archive of another torch version whose pickle names one more global than the reader allows is read
    as before (torch.jit.load), not refused: here, the reader made to refuse OrderedDict."""
    monkeypatch.delitem(archive_reader.ALLOWED, ("collections", "OrderedDict"))
    with pytest.raises(UnsafeArchiveError, match="collections.OrderedDict"):
        read_torchscript_weights(archives["openai-vit"])
    with pytest.warns(UserWarning, match="read with torch.jit.load"):
        ours = clip.read_state_dict(archives["openai-vit"])
    assert_same_state_dict(ours, jit_state_dict(archives["openai-vit"]))


def test_an_archive_the_reader_does_not_understand_falls_back_to_torch_jit_load(archives, monkeypatch):
    def unreadable(path):
        raise ArchiveReadError(path, "a layout it does not know")

    monkeypatch.setattr(checkpoint, "read_torchscript_weights", unreadable)
    with pytest.warns(UserWarning, match="read with torch.jit.load"):
        ours = clip.read_state_dict(archives["openai-vit"])
    assert_same_state_dict(ours, jit_state_dict(archives["openai-vit"]))


# ---------------------------------------------------------------------------
# Damaged archives are still reported as such.

def test_missing_tensor_bytes_are_reported_as_a_damaged_archive(archives, tmp_path):
    with zipfile.ZipFile(archives["openai-vit"]) as source:
        member = next(n for n in source.namelist() if n.endswith("/data/0"))
    damaged = copy_with(archives["openai-vit"], tmp_path / "ViT-B-16.pt", {"/data/0": None})
    with pytest.raises(ArchiveReadError, match=f"the member {re.escape(member)} is missing"):
        read_torchscript_weights(damaged)
    with pytest.raises(clip.CheckpointFormatError,
                       match=f"^{re.escape(str(damaged))}: a damaged TorchScript archive: torch.jit.load fails .*"
                             f"{re.escape(member)} is missing"):
        clip.load(str(damaged), device="cpu")


def test_a_damaged_archive_is_named_so_in_a_torch_without_torch_jit_load(archives, tmp_path, monkeypatch):
    damaged = copy_with(archives["openai-vit"], tmp_path / "ViT-B-16.pt", {"/constants.pkl": None})
    monkeypatch.delattr(torch.jit, "load")
    with pytest.raises(clip.CheckpointFormatError,
                       match=f"^{re.escape(str(damaged))}: a damaged TorchScript archive: the member "
                             f".*/constants.pkl is missing"):
        clip.load(str(damaged), device="cpu")


# ---------------------------------------------------------------------------
# A pickle that names anything else is refused, and nothing is called.

def test_an_archive_whose_pickle_names_os_system_is_refused_without_calling_it(archives, tmp_path, no_jit_load):
    ran = tmp_path / "ran"
    command = f"touch {ran}".encode()
    # os.system(command), pickled by hand: GLOBAL 'os system', the command, TUPLE1, REDUCE, STOP
    payload = b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(command)) + command + b"\x85R."
    crafted = copy_with(archives["openai-vit"], tmp_path / "ViT-B-16.pt", {"/data.pkl": payload})
    for read in (read_torchscript_weights, clip.read_state_dict, lambda p: clip.load(str(p), device="cpu")):
        with pytest.raises(UnsafeArchiveError) as info:
            read(crafted)
        message = str(info.value)
        assert message.startswith(f"{crafted}: refused") and "os.system" in message and "data.pkl" in message
    assert not ran.exists()


def test_os_system_in_a_pickle_is_not_run_by_the_torch_jit_load_fallback_either(archives, tmp_path):
    """Where the reader refuses a global, torch.jit.load is tried (its unpickler resolves TorchScript's types
    only): it fails on os.system without calling it, and the reader's refusal is the error."""
    ran = tmp_path / "ran"
    command = f"touch {ran}".encode()
    payload = b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(command)) + command + b"\x85R."
    crafted = copy_with(archives["openai-vit"], tmp_path / "ViT-B-16.pt", {"/data.pkl": payload})
    with pytest.raises(UnsafeArchiveError, match="os.system"):
        clip.read_state_dict(crafted)
    assert not ran.exists()


def test_compressed_members_are_read_as_well(archives, tmp_path):
    """torch writes tensors uncompressed, and the reader reads those straight from the file; an archive
    repacked with compression (by a zip tool, say) is read through zipfile, to the same weights."""
    source = archives["openai-vit"]
    repacked = tmp_path / "ViT-B-16.pt"
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(repacked, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            new.writestr(info.filename, old.read(info.filename))
    with zipfile.ZipFile(repacked) as check:
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in check.infolist())
    assert_same_state_dict(read_torchscript_weights(repacked), jit_state_dict(source))


# ---------------------------------------------------------------------------
# Crafted archives: what the reader refuses, and what a refusal leaves behind.

def test_torch_jit_load_fallback_is_said(archives, monkeypatch):
    def unreadable(path):
        raise ArchiveReadError(path, "a layout it does not know")
    monkeypatch.setattr(checkpoint, "read_torchscript_weights", unreadable)
    with pytest.warns(UserWarning, match="read with torch.jit.load.*a layout it does not know.*checkpoints you trust"):
        clip.read_state_dict(archives["vit"])


def test_state_a_pickle_sets_on_an_allowed_global_stays_in_its_file(archives, tmp_path):
    """GLOBAL torch._utils._rebuild_tensor_v2, BUILD {'__defaults__': (1,)}: had the reader handed out its own
    function, every later archive of the process would be rebuilt with that default."""
    name = b"__defaults__"
    payload = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X" + struct.pack("<I", len(name)) + name
               + b"K\x01\x85s\x86b.")
    crafted = copy_with(archives["vit"], tmp_path / "crafted.pt", {"/data.pkl": payload})
    with pytest.raises(ArchiveReadError, match="not a module"):
        read_torchscript_weights(crafted)
    assert archive_reader._rebuild_tensor.__defaults__ == (None,)
    assert_same_state_dict(read_torchscript_weights(archives["vit"]), jit_state_dict(archives["vit"]))


def test_a_tensor_reaching_past_its_storage_is_refused():
    storage = (torch.UntypedStorage(8), torch.float32)  # two float32 values
    assert archive_reader._rebuild_tensor(storage, 1, (1,), (1,), False, collections.OrderedDict()).numel() == 1
    with pytest.raises(archive_reader._Unreadable, match=r"reaching past its storage of 8 bytes"):
        archive_reader._rebuild_tensor(storage, 0, (4,), (1,), False, collections.OrderedDict())


def test_a_directory_entry_pointing_at_another_members_bytes_is_refused(archives, tmp_path, no_jit_load):
    source = archives["vit"]
    with zipfile.ZipFile(source) as archive:
        first, second = (archive.getinfo(n) for n in archive.namelist() if re.search(r"/data/[01]$", n))
    raw = bytearray(source.read_bytes())
    entry = raw.index(b"PK\x01\x02")  # the first central directory entry
    while raw[entry + 46:entry + 46 + len(first.filename)] != first.filename.encode():
        entry = raw.index(b"PK\x01\x02", entry + 4)
    raw[entry + 42:entry + 46] = struct.pack("<I", second.header_offset)  # its local header offset
    crafted = tmp_path / "crafted.pt"
    crafted.write_bytes(bytes(raw))
    with pytest.raises(ArchiveReadError, match=f"the member {re.escape(first.filename)}'s local header names another"):
        read_torchscript_weights(crafted)


def test_a_damaged_compressed_member_is_a_damaged_archive(archives, tmp_path):
    repacked = tmp_path / "deflated.pt"
    with zipfile.ZipFile(archives["vit"]) as old, zipfile.ZipFile(repacked, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            new.writestr(info.filename, old.read(info.filename))
    with zipfile.ZipFile(repacked) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("/data/0"))
    raw = bytearray(repacked.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start:start + 8] = b"\xff" * 8  # the deflate stream's first bytes
    repacked.write_bytes(bytes(raw))
    with pytest.raises(ArchiveReadError, match="error|CRC|Bad"):
        read_torchscript_weights(repacked)
