"""CoOp-style prompt learning on a frozen CLIP: ``TextEncoder``, ``PromptLearner``,
``CustomCLIP`` (the names of Zhou et al.'s CoOp).

A prompt for class c is built in token-embedding space (SPEC §5)::

    [SOS] ctx_1 … ctx_M <class name tokens> . [EOS] pad …      (77 tokens)

Only the context vectors are trained; the CLIP encoders are frozen parameters (``requires_grad=False``) and
the prompts' token embeddings and ``logit_scale`` are buffers.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

import clip

CLASS_TOKEN_POSITIONS = ("end", "middle", "front")
CONTEXT_LENGTH = 77  # tokens of every prompt and caption (clip.tokenize's default, as OpenAI's CLIP)


def full_precision(tensor):
    """A context where autocast is off on ``tensor``'s device: the logits are computed in fp32 even inside the
    encoders' bf16 autocast, since bf16 spaces logits of about 30 (100·cos) 0.125 apart and ties their ranking."""
    return torch.autocast(tensor.device.type, enabled=False)


def freeze(module):
    """Frozen means frozen: no gradients and eval mode (so RN50 batch-norm statistics never drift)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class TextEncoder(nn.Module):
    """CLIP's text tower applied to prompts given as token embeddings, in the tower's precision (that of its
    weights: fp16 on the CLIP ``clip.load`` gives on CUDA, whose token and positional embeddings stay fp32)."""

    def __init__(self, clip_model):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection

    def forward(self, prompts, tokenized_prompts):
        # prompts: [C, 77, D] token embeddings; tokenized_prompts: [C, 77] ids
        dtype = self.text_projection.dtype  # fp16 where convert_weights halved the tower (as CLIP.encode_text)
        eot = tokenized_prompts.argmax(dim=-1)  # [C] the end-of-text token has the largest id
        # Causal attention, read at end-of-text: positions after the longest prompt's end cannot matter.
        length = int(eot.max()) + 1 if eot.numel() else prompts.shape[1]
        x = prompts[:, :length].to(dtype) + self.positional_embedding[:length].to(dtype)  # [C, L, D]
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)  # LND in the transformer
        x = self.ln_final(x)  # in x's dtype (clip's LayerNorm computes in fp32)
        return x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection  # [C, E]


def context_words(ctx_init):
    """``--ctx_init`` as the prompt's words: '_' is a space (CoOp's convention), runs of spaces are one;
    '' (random contexts) when nothing is left."""
    return " ".join((ctx_init or "").replace("_", " ").split())


def prompt_texts(class_names, n_ctx=16, ctx_init=""):
    """The prompts' text before their context is learned -> (M context tokens, [C] texts): ``ctx_init``'s
    words (M is their count of tokens: 'high-resolution' is three), or M = ``n_ctx`` placeholders 'X',
    then the class name and a full stop."""
    words = context_words(ctx_init)
    if words:
        n_ctx, prefix = len(clip._tokenizer.encode(words)), words
        if n_ctx == 0:  # an HTML entity or control characters only: no context vector would train
            raise ValueError(f"--ctx_init {ctx_init!r}: CLIP's tokenizer gives no token for it (it drops HTML "
                             f"entities such as '&nbsp;', control characters and spaces); expected words, or '' "
                             f"for --n_ctx random context vectors")
    else:
        if n_ctx < 1:
            raise ValueError(f"n_ctx must be at least 1 with an empty ctx_init, got {n_ctx}")
        prefix = " ".join(["X"] * n_ctx)
    return n_ctx, [f"{prefix} {class_text(name)}." for name in class_names]


def class_text(name):
    """The one spelling of a class name in prompt text: its underscores as spaces ('traffic_light' -> 'traffic
    light'). The prompts, the zero-shot templates and the token counts of ``PromptLearner.name_lens`` all use it."""
    return name.replace("_", " ")


def prompt_tokens(text):
    """The tokens a prompt's text takes of CLIP's context: its BPE tokens and the start and end of text."""
    return len(clip._tokenizer.encode(text)) + 2


def longest_prompts(class_names, texts_by_class):
    """Each class's longest prompt -> [(class name, tokens, i)], in the order of ``class_names``:
    ``texts_by_class[c]`` lists class c's prompt texts and the i-th is the first longest of them, of ``tokens``
    tokens (``prompt_tokens``). ``baselines.check_template_lengths`` refuses a class whose longest prompt is over
    CONTEXT_LENGTH tokens (``check_prompt_length``, one prompt a class, counts them directly)."""
    longest = []
    for name, texts in zip(class_names, texts_by_class):
        tokens, i = max([(prompt_tokens(text), i) for i, text in enumerate(texts)],
                        key=lambda length: length[0])  # the first longest
        longest.append((name, tokens, i))
    return longest


def check_prompt_length(class_names, n_ctx=16, ctx_init=""):
    """Refuse (before any work) a context so long that a class's prompt exceeds CLIP's 77 tokens."""
    _, texts = prompt_texts(class_names, n_ctx, ctx_init)
    lengths = [prompt_tokens(text) for text in texts]  # one prompt a class
    longest = max(range(len(texts)), key=lengths.__getitem__)  # the first class of the longest prompt
    if lengths[longest] > CONTEXT_LENGTH:
        flag = f"--ctx_init {ctx_init!r}" if context_words(ctx_init) else f"--n_ctx {n_ctx}"
        raise ValueError(f"{flag}: the prompt of class {class_names[longest]!r} would be {lengths[longest]} "
                         f"tokens, more than CLIP's {CONTEXT_LENGTH}; use a shorter context")


class PromptLearner(nn.Module):
    """Learnable context vectors around frozen class-name embeddings (SPEC §5).

    ``ctx_init=''`` draws ``n_ctx`` vectors from N(0, 0.02²); otherwise the context
    starts from the token embeddings of the init words (their count of tokens sets M). With
    ``csc`` every class has its own context [C, M, D] — also when initialised from
    words (a deviation: the published code fell back to a shared context).
    """

    def __init__(self, class_names, clip_model, n_ctx=16, ctx_init="", csc=True,
                 class_token_position="end"):
        super().__init__()
        if class_token_position not in CLASS_TOKEN_POSITIONS:
            raise ValueError(f"class_token_position must be one of {CLASS_TOKEN_POSITIONS}, "
                             f"got {class_token_position!r}")
        n_cls = len(class_names)
        embedding = clip_model.token_embedding
        dim = embedding.weight.shape[1]
        device = embedding.weight.device
        check_prompt_length(class_names, n_ctx, ctx_init)
        n_ctx, texts = prompt_texts(class_names, n_ctx, ctx_init)
        ctx_init = context_words(ctx_init)
        if ctx_init:
            with torch.no_grad():
                init = embedding(clip.tokenize(ctx_init).to(device))[0, 1:1 + n_ctx].float()  # [M, D]
            ctx = init.expand(n_cls, -1, -1).clone() if csc else init.clone()
        else:
            ctx = torch.empty(n_cls, n_ctx, dim) if csc else torch.empty(n_ctx, dim)
            nn.init.normal_(ctx, std=0.02)
        self.ctx = nn.Parameter(ctx.to(device))  # [C, M, D] or [M, D], fp32 master copy

        # Tokens of each name, as CoOp counts them. A name ending in ')' or '!' has its full stop joined to
        # its last token in the prompt (').</w>'): its slice then carries the stop, and the end of text stays.
        self.name_lens = [len(clip._tokenizer.encode(class_text(name))) for name in class_names]
        tokenized = clip.tokenize(texts).to(device)  # [C, 77]
        with torch.no_grad():
            token_embeds = embedding(tokenized)  # [C, 77, D]
        self.register_buffer("tokenized_prompts", tokenized, persistent=False)
        self.register_buffer("token_prefix", token_embeds[:, :1], persistent=False)  # [C, 1, D]: start of text
        # [C, 77 - 1 - M, D]: the name's tokens (name_lens[c]), '.', end of text, padding
        self.register_buffer("token_suffix", token_embeds[:, 1 + n_ctx:], persistent=False)
        self.n_cls, self.n_ctx, self.csc = n_cls, n_ctx, csc
        self.class_token_position = class_token_position

    def forward(self):
        ctx = self.ctx if self.ctx.dim() == 3 else self.ctx.expand(self.n_cls, -1, -1)  # [C, M, D]
        ctx = ctx.to(self.token_prefix.dtype)
        prefix, suffix = self.token_prefix, self.token_suffix
        if self.class_token_position == "end":
            return torch.cat([prefix, ctx, suffix], dim=1)  # [C, 77, D]
        rows = []
        half = self.n_ctx // 2
        for c, name_len in enumerate(self.name_lens):
            name, rest = suffix[c:c + 1, :name_len], suffix[c:c + 1, name_len:]
            if self.class_token_position == "middle":
                parts = [prefix[c:c + 1], ctx[c:c + 1, :half], name, ctx[c:c + 1, half:], rest]
            else:  # front
                parts = [prefix[c:c + 1], name, ctx[c:c + 1], rest]
            rows.append(torch.cat(parts, dim=1))
        return torch.cat(rows, dim=0)  # [C, 77, D]


class CustomCLIP(nn.Module):
    """Logits of image features against the learned class prompts: exp(logit_scale) · cos(image, text). The
    frozen image encoder is kept for callers that encode images (the features are usually cached)."""

    def __init__(self, class_names, clip_model, **prompt_kwargs):
        super().__init__()
        self.prompt_learner = PromptLearner(class_names, clip_model, **prompt_kwargs)
        self.text_encoder = freeze(TextEncoder(clip_model))
        self.image_encoder = freeze(clip_model.visual)
        self.register_buffer("logit_scale", clip_model.logit_scale.detach().exp().float(), persistent=False)

    def train(self, mode=True):
        super().train(mode)
        self.text_encoder.eval()
        self.image_encoder.eval()
        return self

    def text_features(self, prompts=None):
        """Normalised class text features [C, E]; pass ``prompts`` to reuse a forward of the learner."""
        if prompts is None:
            prompts = self.prompt_learner()
        features = self.text_encoder(prompts, self.prompt_learner.tokenized_prompts)
        return F.normalize(features.float(), dim=-1)

    def logits(self, image_features, text_features):
        # image_features: [B, E] straight from the image encoder; text_features: [C, E] normalised
        with full_precision(image_features):
            return self.logit_scale * F.normalize(image_features.float(), dim=-1) @ text_features.float().t()  # [B, C]

    def forward(self, image_features):
        return self.logits(image_features, self.text_features())
