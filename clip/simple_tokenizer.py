"""CLIP's byte-level BPE tokenizer, identical in output to OpenAI's ``clip/simple_tokenizer.py``.

The vocabulary ``bpe_simple_vocab_16e6.txt.gz`` is not shipped in this repository.
It is read from ``clip/`` when a user placed it there, else from the files of the
installed ``open_clip_torch`` distribution (found without importing open_clip).
"""
import gzip
import html
import importlib.metadata
import importlib.util
from functools import lru_cache
from pathlib import Path

import ftfy
import regex as re

VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408  # OpenAI's: 512 byte symbols, 48,894 merges, start and end of text
SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"


class VocabularyNotFoundError(FileNotFoundError):
    """The BPE vocabulary file is nowhere to be found."""


class VocabularyFormatError(ValueError):
    """The default BPE vocabulary file cannot be read, or does not give OpenAI's 49,408 tokens."""


def _vocab_candidates():
    """Places the vocabulary may be, in order of preference."""
    yield Path(__file__).resolve().parent / VOCAB_NAME
    try:
        dist = importlib.metadata.distribution("open_clip_torch")
        yield Path(dist.locate_file(f"open_clip/{VOCAB_NAME}"))
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        spec = importlib.util.find_spec("open_clip")  # locates, does not import
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin:
        yield Path(spec.origin).parent / VOCAB_NAME


def default_bpe():
    """Path of the BPE vocabulary; raises VocabularyNotFoundError saying where to put it."""
    tried = []
    for path in _vocab_candidates():
        if path.is_file():
            return str(path)
        tried.append(str(path))
    raise VocabularyNotFoundError(
        f"CLIP's BPE vocabulary {VOCAB_NAME} was not found (tried: {', '.join(tried)}). "
        f"Install open_clip_torch (pip install open_clip_torch), which ships it, or copy "
        f"OpenAI's {VOCAB_NAME} into {Path(__file__).resolve().parent}/.")


def _bad_vocabulary(path, problem):
    """The message for a default vocabulary file that is not OpenAI's: its path, what is wrong, what to do."""
    remedy = f"replace it with OpenAI's {VOCAB_NAME} (open_clip_torch ships it)"
    if Path(path).resolve().parent == Path(__file__).resolve().parent:
        remedy += " or remove it, so that the copy open_clip_torch ships is read"
    return (f"{path}: CLIP's BPE vocabulary {problem}, expected OpenAI's {VOCAB_SIZE:,} tokens "
            f"(a truncated or different file); {remedy}")


@lru_cache()
def bytes_to_unicode():
    """Map every byte to a printable unicode character (reversible), as GPT-2/CLIP do."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def get_pairs(word):
    """Set of adjacent symbol pairs in a word (a tuple of symbols)."""
    return set(zip(word[:-1], word[1:]))


def basic_clean(text):
    if text.isascii() and text.isprintable() and "&" not in text:
        # ftfy and html.unescape change nothing here (no mojibake, entities, controls or line
        # breaks are possible), and they cost most of the time of tokenising such text.
        return text.strip()
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return text.strip()


def whitespace_clean(text):
    return " ".join(text.split()).strip()


class SimpleTokenizer:
    """OpenAI's CLIP tokenizer: ``encode(text) -> list[int]``, ``decode(ids) -> str``."""

    def __init__(self, bpe_path=None):
        """``bpe_path``: the vocabulary file; by default ``default_bpe()``'s, which must give OpenAI's
        49,408 tokens (VocabularyFormatError otherwise). A file given here is read as it is."""
        check = not bpe_path
        bpe_path = bpe_path or default_bpe()
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        try:
            with gzip.open(bpe_path) as f:
                merges = f.read().decode("utf-8").split("\n")
        except (OSError, EOFError, UnicodeDecodeError) as error:
            if not check:
                raise
            raise VocabularyFormatError(_bad_vocabulary(bpe_path, f"cannot be read ({type(error).__name__}: "
                                                                  f"{error})")) from None
        merges = [tuple(m.split()) for m in merges[1:49152 - 256 - 2 + 1]]
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab]
        vocab.extend("".join(m) for m in merges)
        vocab.extend([SOT_TOKEN, EOT_TOKEN])
        self.encoder = dict(zip(vocab, range(len(vocab))))
        if check and len(self.encoder) != VOCAB_SIZE:
            raise VocabularyFormatError(_bad_vocabulary(bpe_path, f"gives {len(self.encoder):,} distinct tokens"))
        self.decoder = {v: k for k, v in self.encoder.items()}
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache = {SOT_TOKEN: SOT_TOKEN, EOT_TOKEN: EOT_TOKEN}  # byte-encoded word -> BPE symbols
        self.word_cache = {}  # word as split from the text -> tuple of token ids
        self.pat = re.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            re.IGNORECASE)

    def bpe(self, token):
        """Space-separated BPE symbols of one word (cached per word)."""
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = get_pairs(word)
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        result = " ".join(word)
        self.cache[token] = result
        return result

    def word_ids(self, word):
        """Token ids of one pre-tokenized word (cached per word)."""
        ids = self.word_cache.get(word)
        if ids is None:
            word_bytes = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
            ids = tuple(self.encoder[t] for t in self.bpe(word_bytes).split(" "))
            self.word_cache[word] = ids
        return ids

    def encode(self, text):
        """Token ids of ``text`` (without start/end tokens)."""
        text = whitespace_clean(basic_clean(text)).lower()
        ids = []
        cache = self.word_cache
        for word in self.pat.findall(text):
            word_ids = cache.get(word)
            ids.extend(word_ids if word_ids is not None else self.word_ids(word))
        return ids

    def decode(self, tokens):
        """Text of a list of token ids (words end with a space, as OpenAI's)."""
        text = "".join(self.decoder[int(t)] for t in tokens)
        return bytearray([self.byte_decoder[c] for c in text]).decode("utf-8", errors="replace").replace("</w>", " ")
