"""Input files that used to be misread: a BOM before bad bytes, a malicious class_freq.pkl, one image under
two spellings, and splits that share images."""
import pytest

from lmpt.data import DataError, read_list


def test_a_bad_byte_after_a_bom_is_named_at_its_own_line_and_byte(tmp_path):
    path = tmp_path / "list.txt"
    path.write_bytes(b"\xef\xbb\xbfa 0\nb 1\n\xffc 2\n")
    with pytest.raises(DataError) as refused:
        read_list(path, 3)
    assert str(refused.value).startswith(f"{path}:3: not UTF-8 text (byte b'\\xff' cannot be decoded: ")
    path.write_bytes(b"\xef\xbb\xbfa 0\r\nb\xc3 1\r\n")  # and with CRLF endings, a truncated sequence on line 2
    with pytest.raises(DataError, match=r"list\.txt:2: not UTF-8 text \(byte b'\\xc3' cannot"):
        read_list(path, 3)
