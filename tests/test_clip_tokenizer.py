"""clip.tokenize and clip._tokenizer against open_clip's tokenizer (an independent copy of OpenAI's)."""
import builtins
import importlib
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import clip  # noqa: E402
from clip import simple_tokenizer  # noqa: E402
from clip.simple_tokenizer import basic_clean, whitespace_clean  # noqa: E402

open_clip_tokenizer = pytest.importorskip("open_clip.tokenizer")

# Token ids of OpenAI's special tokens (published with CLIP).
SOT, EOT = 49406, 49407

EDGE_CASES = [
    "",
    "   ",
    "a photo of a dog.",
    "A PHOTO   of\ta\n\nDOG!!",
    "Café crème brûlée à la française, naïve façade",
    "東京タワーと北京の猫",  # CJK
    "Здравствуй, мир; Γειά σου κόσμε",
    "a dog 🐶 and a cat 🐱 👍🏽 ❤️",
    "Tom &amp; Jerry &lt;3 &quot;cheese&quot; &amp;amp; more &amp;amp;amp; &#233;t&eacute;",
    "<b>Tom &amp;amp; Jerry</b> &amp;lt;i&amp;gt;",  # markup: ftfy leaves entities, html.unescape twice does not
    "it's a dog's life, they'll say we're done; I'd've",
    "numbers 1234567890 and 3.14159, 1e-9",
    "mojibake: cafÃ© and â€œquotesâ€\x9d",
    "tabs\tand\r\nwindows line breaks\u00a0nbsp",
    "under_score-hyphen/slash #hash @at",
]


def reference_tokenize(texts, context_length=77):
    return open_clip_tokenizer.SimpleTokenizer()(texts, context_length=context_length)


def read_captions(path):
    # caption = text after the first space (the first field is the image path)
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [line.split(" ", 1)[1] if " " in line else "" for line in lines]


@pytest.fixture(scope="module")
def reference():
    return open_clip_tokenizer.SimpleTokenizer()


@pytest.mark.parametrize("caption_file", ["data/voc/voc_lt_captions.txt", "data/coco/coco_lt_captions.txt"])
def test_tokenize_equals_open_clip_on_every_caption(caption_file, reference):
    captions = read_captions(ROOT / caption_file)
    assert len(captions) > 1000
    ours = clip.tokenize(captions, truncate=True)
    theirs = reference(captions, context_length=77)
    assert ours.dtype == torch.int32  # OpenAI's clip.tokenize on torch >= 1.8 (open_clip's gives int64)
    assert ours.shape == (len(captions), 77)
    assert torch.equal(ours, theirs.to(torch.int32))


def test_tokenize_edge_cases_equal_open_clip(reference):
    ours = clip.tokenize(EDGE_CASES)
    theirs = reference(EDGE_CASES, context_length=77)
    assert torch.equal(ours, theirs.to(torch.int32))
    assert (ours[:, 0] == SOT).all()
    # the empty string is start, end, then zero padding
    assert ours[0, :2].tolist() == [SOT, EOT] and not ours[0, 2:].any()


@pytest.mark.parametrize("context_length", [77, 16])
def test_overlong_text_truncates_like_open_clip_or_raises(context_length, reference):
    text = "a very long caption about a dog on a sofa " * 20
    ours = clip.tokenize([text, "short"], context_length=context_length, truncate=True)
    theirs = reference([text, "short"], context_length=context_length)
    assert torch.equal(ours, theirs.to(torch.int32))
    assert ours[0, -1] == EOT  # the end token survives truncation
    with pytest.raises(RuntimeError, match=f"is too long for context length {context_length}"):
        clip.tokenize([text], context_length=context_length)


def test_single_string_and_exact_fit():
    one = clip.tokenize("a photo of a cat")
    assert one.shape == (1, 77)
    assert torch.equal(one, clip.tokenize(["a photo of a cat"]))
    # a text of exactly context_length tokens (start + 75 + end) is not too long
    text = " ".join(["dog"] * 75)
    full = clip.tokenize(text)
    assert full[0, -1] == EOT and (full[0] != 0).all()
    with pytest.raises(RuntimeError):
        clip.tokenize(text + " dog")


def test_encode_decode_like_open_clip(reference):
    for text in EDGE_CASES:
        ids = clip._tokenizer.encode(text)
        assert ids == reference.encode(text)
        assert clip._tokenizer.decode(ids) == reference.decode(ids)
    assert isinstance(clip._tokenizer, simple_tokenizer.SimpleTokenizer)
    assert clip._tokenizer.encoder["<|startoftext|>"] == SOT
    assert clip._tokenizer.encoder["<|endoftext|>"] == EOT


def test_word_cache_serves_repeated_words():
    captions = read_captions(ROOT / "data/coco/coco_lt_captions.txt")
    tokenizer = simple_tokenizer.SimpleTokenizer()
    first = [tokenizer.encode(c) for c in captions]
    words = {w for c in captions for w in tokenizer.pat.findall(whitespace_clean(basic_clean(c)).lower())}
    assert set(tokenizer.word_cache) == words  # each word split once, kept
    # Neither the word cache nor BPE's own may be asked again: with both made unusable, a word not
    # served from the word cache would raise.
    tokenizer.bpe = tokenizer.word_ids = None
    assert [tokenizer.encode(c) for c in captions[:50]] == first[:50]
    uncached = simple_tokenizer.SimpleTokenizer()
    uncached.bpe_ranks = {}
    assert uncached.encode(captions[0]) != first[0]


def test_vocabulary_is_found_without_importing_open_clip(monkeypatch):
    real_import = builtins.__import__

    def guarded_import(name, *args, **kwargs):
        if name.split(".")[0] == "open_clip":
            raise AssertionError(f"clip imported {name}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", guarded_import)
    monkeypatch.setattr(importlib, "import_module", lambda name, *a: guarded_import(name))
    path = Path(simple_tokenizer.default_bpe())
    tokenizer = simple_tokenizer.SimpleTokenizer()
    monkeypatch.undo()
    assert path.name == simple_tokenizer.VOCAB_NAME
    assert path.parent.resolve() in (Path(simple_tokenizer.__file__).resolve().parent,
                           Path(open_clip_tokenizer.__file__).resolve().parent)
    assert tokenizer.encode("a dog") == open_clip_tokenizer.SimpleTokenizer().encode("a dog")


def test_missing_vocabulary_error_says_where_to_put_it(monkeypatch, tmp_path):
    monkeypatch.setattr(simple_tokenizer, "_vocab_candidates", lambda: iter([tmp_path / simple_tokenizer.VOCAB_NAME]))
    with pytest.raises(FileNotFoundError) as info:
        simple_tokenizer.SimpleTokenizer()
    message = str(info.value)
    assert simple_tokenizer.VOCAB_NAME in message
    assert "open_clip_torch" in message
    assert str(Path(simple_tokenizer.__file__).resolve().parent) in message


def test_vocabulary_placed_in_clip_folder_comes_first():
    first = next(simple_tokenizer._vocab_candidates())
    assert first == Path(simple_tokenizer.__file__).resolve().parent / simple_tokenizer.VOCAB_NAME


def test_basic_clean_fast_path_equals_ftfy_on_printable_ascii():
    """Printable ASCII without '&' skips ftfy and html.unescape; their result must be the same."""
    import html
    import random
    import string

    import ftfy
    from clip.simple_tokenizer import basic_clean

    rng = random.Random(0)
    alphabet = string.printable[:95]  # printable ASCII, space included; no tabs or line breaks
    texts = ["a photo of a dog.", "  padded  ", 'it is a "quote" <b>', "x" * 200]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(3000)]
    checked = 0
    for text in texts:
        if "&" in text:
            continue
        assert basic_clean(text) == html.unescape(html.unescape(ftfy.fix_text(text))).strip(), repr(text)
        checked += 1
    assert checked > 2000
    assert basic_clean("caf\u00c3\u00a9 &amp; co") == "café & co"  # the slow path still fixes mojibake and entities


def shortened_vocabulary(path, lines=1000):
    """A gzip copy of the first ``lines`` lines of the real vocabulary at ``path`` (a truncated file) -> path."""
    import gzip

    with gzip.open(simple_tokenizer.default_bpe()) as f:
        head = f.read().decode("utf-8").split("\n")[:lines]
    with gzip.open(path, "wb") as f:
        f.write("\n".join(head).encode("utf-8"))
    return path


def test_default_vocabulary_of_the_wrong_size_is_refused(monkeypatch, tmp_path):
    short = shortened_vocabulary(tmp_path / simple_tokenizer.VOCAB_NAME)
    monkeypatch.setattr(simple_tokenizer, "_vocab_candidates", lambda: iter([short]))
    with pytest.raises(ValueError) as info:
        simple_tokenizer.SimpleTokenizer()
    assert isinstance(info.value, clip.VocabularyFormatError)
    message = str(info.value)
    assert message.startswith(f"{short}: ")
    assert "49,408" in message and f"{512 + 999 + 2:,}" in message  # what was expected, what the file gives


def test_default_vocabulary_cut_short_is_refused(monkeypatch, tmp_path):
    short = shortened_vocabulary(tmp_path / simple_tokenizer.VOCAB_NAME)
    short.write_bytes(short.read_bytes()[:200])  # cut short, as by a copy that did not finish
    monkeypatch.setattr(simple_tokenizer, "_vocab_candidates", lambda: iter([short]))
    with pytest.raises(clip.VocabularyFormatError, match="49,408") as info:
        simple_tokenizer.SimpleTokenizer()
    assert str(info.value).startswith(f"{short}: ")


def test_explicit_vocabulary_path_is_read_as_it_is(tmp_path):
    short = shortened_vocabulary(tmp_path / "my_vocab.txt.gz")
    tokenizer = simple_tokenizer.SimpleTokenizer(bpe_path=str(short))
    assert len(tokenizer.encoder) == 512 + 999 + 2
    assert tokenizer.encoder["<|endoftext|>"] == len(tokenizer.encoder) - 1


def test_special_token_strings_inside_a_text_are_the_special_ids():
    """As OpenAI's pattern (its first alternatives) does: a literal ``<|endoftext|>`` or ``<|startoftext|>`` in a
    text is that token, not BPE pieces of the string (open_clip 3.3 splits it, so it cannot be the reference)."""
    encoder = clip._tokenizer.encoder
    sot, eot = encoder["<|startoftext|>"], encoder["<|endoftext|>"]
    assert clip.tokenize("<|endoftext|> x")[0, :5].tolist() == [sot, eot, encoder["x</w>"], eot, 0]
    ids = clip.tokenize("a <|startoftext|>dog <|ENDOFTEXT|>")[0, :6].tolist()  # case-insensitive, as OpenAI's
    assert ids == [sot, encoder["a</w>"], sot, encoder["dog</w>"], eot, eot]
