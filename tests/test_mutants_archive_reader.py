"""clip/archive_reader.py's checks at their bounds: a tensor reaching one element past its storage is refused (one
that ends at its storage's end is read), a member holding more bytes than its tensors' storage declares is refused,
and a member whose directory entry claims more bytes than the file holds is cut short, not read with a tail of
uninitialised memory."""
import collections
import re
import struct
import zipfile

import pytest
import torch

from clip import archive_reader
from clip.archive_reader import ArchiveReadError, read_torchscript_weights
from test_clip_archive_reader import copy_with
from tiny_clip import write_tiny_clip


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("archive") / "vit.pt", arch="vit")


def rebuild(storage, offset, size, stride):
    return archive_reader._rebuild_tensor(storage, offset, size, stride, False, collections.OrderedDict())


def test_a_tensor_reaching_one_element_past_its_storage_is_refused():
    storage = (torch.UntypedStorage(8), torch.float32)  # two float32 values
    assert rebuild(storage, 0, (2,), (1,)).numel() == 2  # to its storage's end: read
    assert rebuild(storage, 1, (1,), (1,)).numel() == 1
    assert rebuild(storage, 0, (1, 2), (2, 1)).shape == (1, 2)
    for offset, size, stride in ((1, (2,), (1,)), (0, (3,), (1,)), (0, (2, 1), (2, 1)), (0, (2,), (2,))):
        with pytest.raises(archive_reader._Unreadable, match="reaching past its storage of 8 bytes"):
            rebuild(storage, offset, size, stride)
    assert storage[0].nbytes() == 8  # not grown


def test_a_member_longer_than_its_storage_is_refused(archive, tmp_path):
    with zipfile.ZipFile(archive) as source:
        member = next(n for n in source.namelist() if n.endswith("/data/0"))
        data = source.read(member)
    crafted = copy_with(archive, tmp_path / "longer.pt", {"/data/0": data + bytes(4)})  # one float32 too many
    with pytest.raises(ArchiveReadError, match=f"the member {re.escape(member)} holds {len(data) + 4} bytes, "
                                               f"not {len(data)}"):
        read_torchscript_weights(crafted)
    shorter = copy_with(archive, tmp_path / "shorter.pt", {"/data/0": data[:-4]})
    with pytest.raises(ArchiveReadError, match=f"the member {re.escape(member)} holds {len(data) - 4} bytes, "
                                               f"not {len(data)}"):
        read_torchscript_weights(shorter)


def test_a_member_claiming_more_bytes_than_the_file_holds_is_cut_short(archive, tmp_path):
    with zipfile.ZipFile(archive) as source:
        infos = [i for i in source.infolist() if re.search(r"/data/\d+$", i.filename)]
    last = max(infos, key=lambda i: i.header_offset)  # the tensor bytes nearest the end of the file
    raw = bytearray(archive.read_bytes())
    claimed = len(raw)  # more than the bytes after its local header
    entry = raw.index(b"PK\x01\x02")  # its central directory entry: sizes at 20 (compressed) and 24
    while raw[entry + 46:entry + 46 + len(last.filename)] != last.filename.encode():
        entry = raw.index(b"PK\x01\x02", entry + 4)
    raw[entry + 20:entry + 28] = struct.pack("<II", claimed, claimed)
    crafted = tmp_path / "cut.pt"
    crafted.write_bytes(bytes(raw))
    with zipfile.ZipFile(crafted) as check:
        assert check.getinfo(last.filename).file_size == claimed
    with pytest.raises(ArchiveReadError, match=f"the member {re.escape(last.filename)} is cut short"):
        read_torchscript_weights(crafted)
