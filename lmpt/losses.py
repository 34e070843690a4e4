"""Classification losses (SPEC §6) and class-specific embedding losses (SPEC §7).

Every module here is pure: no I/O, constants kept as buffers so that
``.to(device)`` moves them, derived quantities computed in the dtype of the
logits. All classification losses map ``(logits [B, C], targets [B, C] 0/1)``
to a scalar: the mean over the B×C elements times a loss weight.

Choices made where the SPEC leaves room:

- ``--gamma`` (μ of the re-balanced weight, read by the rows with ``reweight='rebalance'``) and
  ``--neg_scale`` (λ of NTR, read by the rows with ``ntr``: ``db_flags_read``) are
  resolved the same way for every Distribution-Balanced-family name: the
  explicit value when given, else ``DB_DEFAULTS[dataset]``; a dataset not in
  ``DB_DEFAULTS`` (or ``None``) uses the VOC-LT values. (The published code of
  Huang et al. had its own per-name defaults; one rule is simpler to explain.)
- Re-balanced weight for a row without any positive label: the denominator
  Σ_{k: y_ik=1} 1/n_k is zero; the published code computed r = 1/0 = inf and
  σ(inf) = 1, so w = α + 1. We return that limit, α + 1, without forming inf.
- NTR without a re-weighting (``NTR-Focal``) uses w = 1, so negatives get
  weight 1/λ (SPEC: "unweighted: w = 1").
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import DATASETS

# μ (--gamma) and λ (--neg_scale) of the image-recognition DB loss, per dataset.
DB_DEFAULTS = {'voc-lt': dict(gamma=0.3, neg_scale=5.0), 'coco-lt': dict(gamma=0.2, neg_scale=2.0)}
DB_FALLBACK_DATASET = 'voc-lt'


def check_db_defaults(defaults=DB_DEFAULTS, datasets=DATASETS):
    """At the import of this module: every row of ``DB_DEFAULTS`` is keyed by the name of a dataset (a row
    under an alias or a typo would never be read, and the dataset would train with the fallback's μ and λ)."""
    unknown = [key for key in defaults if key not in datasets]
    if unknown:
        raise ValueError(f"losses.DB_DEFAULTS: {', '.join(map(repr, unknown))} is not the name of a dataset; "
                         f"expected one of {', '.join(datasets)}")


check_db_defaults()

# The Distribution-Balanced family as one table of ResampleLoss flags.
# reweight: 'rebalance' | 'CB' | None; balance: focal balance parameter f (None: no focal term).
_RESAMPLE_TABLE = {
    'dbl': dict(reweight='rebalance', ntr=True, balance=2.0, loss_weight=1.0),
    'DBloss': dict(reweight='rebalance', ntr=True, balance=0.5, loss_weight=1.0),
    'DBloss-noFocal': dict(reweight='rebalance', ntr=True, balance=None, loss_weight=0.5),
    'FL': dict(reweight=None, ntr=False, balance=0.5, loss_weight=1.0),
    'CBloss': dict(reweight='CB', ntr=False, balance=0.5, loss_weight=10.0),
    'CBloss-ntr': dict(reweight='CB', ntr=True, balance=0.5, loss_weight=10.0),
    'R-BCE-Focal': dict(reweight='rebalance', ntr=False, balance=0.5, loss_weight=1.0),
    'NTR-Focal': dict(reweight=None, ntr=True, balance=0.5, loss_weight=1.0),
}
# The losses that need no class statistics: name -> the loss (the classes are defined below).
_PLAIN_LOSSES = {'bce': lambda: BCELoss(), 'mls': lambda: MultiLabelSoftMarginLoss(), 'asl': lambda: AsymmetricLoss()}
# The names --loss_function offers: the plain losses, then the Distribution-Balanced family.
CLASSIFICATION_LOSSES = (*_PLAIN_LOSSES, *_RESAMPLE_TABLE)
# lmpt/train.py's flags of the Distribution-Balanced family: flag -> (its symbol, whether a _RESAMPLE_TABLE row
# reads it). μ (--gamma) is read by the re-balanced weights alone, λ (--neg_scale) by the negative-tolerant
# regularisation alone (ResampleLoss); tests/test_flags_db_read.py checks each loss against db_flags_read.
_DB_FLAGS = {'gamma': ('μ', lambda row: row['reweight'] == 'rebalance'),
             'neg_scale': ('λ', lambda row: row['ntr'])}
DB_LOSS_FLAGS = tuple(_DB_FLAGS)


def db_flags_read(name):
    """The flags of ``DB_LOSS_FLAGS`` the classification loss ``name`` reads, in their order: those its
    ``_RESAMPLE_TABLE`` row uses (``_DB_FLAGS``); none for the other losses."""
    row = _RESAMPLE_TABLE.get(name)
    return tuple(key for key, (_, reads) in _DB_FLAGS.items() if row is not None and reads(row))


def db_params_text(name, params):
    """The values of ``params`` (``db_params``'s) that the loss ``name`` reads, as "μ = 0.3, λ = 5" ('' when it
    reads none)."""
    return ', '.join(f"{_DB_FLAGS[key][0]} = {params[key]:g}" for key in db_flags_read(name))

CSE_LOSSES = ('softmargin', 'hinge', 'weighted', 'nn_hinge')
# Chosen by validation mAP in tools/sweep_cse.py on the embedded benchmark (docs/SWEEP.md), where the
# grid Δ ∈ {0.2, 0.5, 1} × γ ∈ {0.5, 1, 2} differed by about the seed-to-seed spread.
DEFAULT_CSE_MARGIN = 0.5  # Δ
DEFAULT_CSE_GAMMA = 0.5  # γ of the class weights n_c^-γ
DEFAULT_M_CTX = 2  # m: the token offset between caption and prompt (the published --m_ctx)


def _as_freq(values, what, allow_zero=True, counts="a positive count"):
    """A 1-D float64 tensor of finite, non-negative counts, or ValueError (``counts``: what a zero lacks)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what}: expected a non-empty 1-D array of per-class counts, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{what}: expected finite non-negative counts, got {arr.tolist()}")
    if not allow_zero and np.any(arr == 0):
        raise ValueError(f"{what}: expected every class to have {counts}; "
                         f"classes {np.flatnonzero(arr == 0).tolist()} have 0")
    return torch.from_numpy(arr)


def _check_pair(logits, targets, num_classes, who):
    if logits.dim() != 2 or logits.shape != targets.shape:
        raise ValueError(f"{who}: expected logits and targets of the same shape [B, C], "
                         f"got {tuple(logits.shape)} and {tuple(targets.shape)}")
    if num_classes is not None and logits.shape[1] != num_classes:
        raise ValueError(f"{who}: expected C = {num_classes} classes (from class_freq), got {logits.shape[1]}")


class BCELoss(nn.Module):
    """BCE-with-logits, mean over B×C."""

    def forward(self, logits, targets):
        _check_pair(logits, targets, None, 'bce')
        return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))


class MultiLabelSoftMarginLoss(nn.Module):
    """torch's multilabel_soft_margin_loss: batch mean of per-row class means = mean over B×C."""

    def forward(self, logits, targets):
        _check_pair(logits, targets, None, 'mls')
        return F.multilabel_soft_margin_loss(logits, targets.to(logits.dtype))


class AsymmetricLoss(nn.Module):
    """ASL (Ridnik et al. 2021): γ+ on positives, γ- and probability clipping on negatives; mean over B×C."""

    def __init__(self, gamma_pos=0.0, gamma_neg=4.0, clip=0.05, eps=1e-8):
        super().__init__()
        self.gamma_pos, self.gamma_neg, self.clip, self.eps = gamma_pos, gamma_neg, clip, eps

    def forward(self, logits, targets):
        _check_pair(logits, targets, None, 'asl')
        y = targets.to(logits.dtype)
        log_eps = math.log(self.eps)
        # log max(p, eps) written with logsigmoid: finite for any logit
        log_p = F.logsigmoid(logits).clamp(min=log_eps)  # [B, C]
        q = torch.sigmoid(-logits)  # 1 - p, [B, C]
        if self.clip > 0:
            q = (q + self.clip).clamp(max=1.0)  # 1 - p_m with p_m = max(p - clip, 0)
        log_q = torch.log(q.clamp(min=self.eps))  # [B, C]
        loss = y * log_p + (1 - y) * log_q
        with torch.no_grad():
            p_t = y * torch.exp(log_p) + (1 - y) * q
            focus = torch.pow(1 - p_t, self.gamma_pos * y + self.gamma_neg * (1 - y))  # [B, C]
        return -(loss * focus).mean()


class ResampleLoss(nn.Module):
    """The Distribution-Balanced loss family as one configurable module.

    reweight: 'rebalance' (w_ic = α + σ(β (r_ic − μ))), 'CB' (w_c = (1 − b)/(1 − b^{n_c})) or None (w = 1);
    ntr: negative-tolerant regularisation (bias b_c, negatives scaled by λ with weight w/λ);
    balance: focal balance parameter f, None for no focal term (focal exponent ``focal_gamma``);
    loss_weight: multiplies the mean over B×C.
    """

    def __init__(self, class_freq, neg_class_freq, reweight='rebalance', ntr=True, balance=2.0, loss_weight=1.0,
                 map_alpha=0.1, map_beta=10.0, map_gamma=0.3, neg_scale=5.0, init_bias=0.05, cb_beta=0.9,
                 focal_gamma=2.0):
        super().__init__()
        if reweight not in ('rebalance', 'CB', None):
            raise ValueError(f"ResampleLoss: reweight must be 'rebalance', 'CB' or None, got {reweight!r}")
        for name, value in (('gamma', map_gamma), ('neg_scale', neg_scale)):
            if not math.isfinite(float(value)):
                raise ValueError(f"ResampleLoss: {name} must be finite, got {value}")
        if ntr and not neg_scale > 0:
            raise ValueError(f"ResampleLoss: neg_scale (λ) must be > 0, got {neg_scale}")
        needs_pos = reweight is not None or ntr
        pos = _as_freq(class_freq, 'class_freq', allow_zero=not needs_pos)
        neg = _as_freq(neg_class_freq, 'neg_class_freq', allow_zero=not ntr,
                       counts="a training image without it (negative-tolerant regularisation)")
        if pos.shape != neg.shape:
            raise ValueError(f"ResampleLoss: class_freq and neg_class_freq differ in length "
                             f"({pos.numel()} vs {neg.numel()})")
        self.register_buffer('class_freq', pos.float())  # [C]
        self.register_buffer('neg_class_freq', neg.float())  # [C]
        self.reweight, self.ntr, self.balance, self.loss_weight = reweight, ntr, balance, float(loss_weight)
        self.map_alpha, self.map_beta, self.map_gamma = float(map_alpha), float(map_beta), float(map_gamma)
        self.neg_scale, self.init_bias = float(neg_scale), float(init_bias)
        self.cb_beta, self.focal_gamma = float(cb_beta), float(focal_gamma)

    def weights(self, targets):
        """Per-element weights w [B, C] before NTR (None when unweighted), in the targets' dtype."""
        n = self.class_freq.to(targets.dtype)  # [C]
        if self.reweight == 'rebalance':
            freq_inv = 1.0 / n  # [C]
            repeat_rate = targets @ freq_inv  # [B], Σ_{k: y_ik=1} 1/n_k
            has_pos = repeat_rate > 0
            # rows without a positive: w = α + 1, the limit r → inf of the published code (never forms inf)
            safe = torch.where(has_pos, repeat_rate, torch.ones_like(repeat_rate))
            r = freq_inv[None, :] / safe[:, None]  # [B, C]
            w = self.map_alpha + torch.sigmoid(self.map_beta * (r - self.map_gamma))
            return torch.where(has_pos[:, None], w, torch.full_like(w, self.map_alpha + 1.0))
        if self.reweight == 'CB':
            w = (1 - self.cb_beta) / (1 - torch.pow(torch.full_like(n, self.cb_beta), n))  # [C]
            return w[None, :].expand_as(targets)
        return None

    def bias(self, dtype):
        """NTR bias b_c = −log(N/n_c − 1)·κ/λ, N = class_freq + neg_class_freq; [C], given in ``dtype`` and
        computed in it, or in float32 for fp16/bf16 (counts such as 1,141 of 1,142 are one number in bf16,
        where N/n_c − 1 would be 0). float32, as the published code computed it for fp32 logits, keeps
        fp32 runs bit for bit as they were; float64 would move the last bit of some classes' bias."""
        exact = torch.promote_types(dtype, torch.float32)
        pos, neg = self.class_freq.to(exact), self.neg_class_freq.to(exact)
        total = pos + neg
        return (-torch.log(total / pos - 1) * self.init_bias / self.neg_scale).to(dtype)

    def forward(self, logits, targets):
        """Mean loss over the [B, C] elements; fp16/bf16 logits are computed in float32 (as autocast
        computes a BCE), whose gradient flows back in their dtype."""
        _check_pair(logits, targets, self.class_freq.numel(), 'ResampleLoss')
        return self._loss(logits.to(torch.promote_types(logits.dtype, torch.float32)), targets)

    def _loss(self, logits, targets):
        y = targets.to(logits.dtype)
        w = self.weights(y)
        z = logits
        if self.ntr:
            z = z + self.bias(logits.dtype)[None, :]
            z = z * (1 - y) * self.neg_scale + z * y
            w = torch.ones_like(y) if w is None else w
            w = w / self.neg_scale * (1 - y) + w * y
        loss = F.binary_cross_entropy_with_logits(z, y, weight=w, reduction='none')  # [B, C]
        if self.balance is not None:
            # per-element p_t, gradient flows through it as in the published code
            # (deviation: the published copy reduced the BCE to a batch mean first)
            p_t = torch.exp(-F.binary_cross_entropy_with_logits(z, y, reduction='none'))  # [B, C]
            loss = self.balance * (1 - p_t) ** self.focal_gamma * loss
        return self.loss_weight * loss.mean()


def check_negatives(name, neg_class_freq, class_names, train_list):
    """Before any work: a loss with negative-tolerant regularisation (``ntr``) needs, for every class, a
    training image without it (its bias −log(N/n_c − 1) is infinite for a class in every image)."""
    if not _RESAMPLE_TABLE.get(name, {}).get('ntr'):
        return
    full = [f"{i} {class_names[i]!r}" for i in np.flatnonzero(np.asarray(neg_class_freq) == 0)]
    if full:
        plain = [n for n in CLASSIFICATION_LOSSES if not _RESAMPLE_TABLE.get(n, {}).get('ntr')]
        raise ValueError(f"{train_list}: class(es) {', '.join(full)} in every training image; --loss_function "
                         f"{name}'s negative-tolerant regularisation needs a training image without each class. "
                         f"Use a loss without it ({', '.join(plain)}) or add such images")


def resolve_db_params(dataset=None, gamma=None, neg_scale=None):
    """(μ, λ): explicit values win, else DB_DEFAULTS[dataset]; unknown datasets use the VOC-LT values."""
    defaults = DB_DEFAULTS.get(dataset, DB_DEFAULTS[DB_FALLBACK_DATASET])
    return (float(defaults['gamma'] if gamma is None else gamma),
            float(defaults['neg_scale'] if neg_scale is None else neg_scale))


def db_params(name, dataset=None, gamma=None, neg_scale=None):
    """What a run with ``--loss_function name`` records of the DB loss, and where the values it reads
    (``db_flags_read``) came from: ({'gamma': μ, 'neg_scale': λ}, e.g. "voc-lt's defaults") for the
    Distribution-Balanced family (``resolve_db_params``; both are recorded, as the loss is built with both),
    where a row that reads neither gets source ''; ({}, '') for the other losses."""
    if name not in _RESAMPLE_TABLE:
        return {}, ''
    mu, lam = resolve_db_params(dataset, gamma, neg_scale)
    read = db_flags_read(name)
    given = [f'--{key}' for key, value in (('gamma', gamma), ('neg_scale', neg_scale)) if key in read and
             value is not None]
    source = (f"{dataset}'s defaults" if dataset in DB_DEFAULTS else
              f"{DB_FALLBACK_DATASET}'s defaults: {dataset} has no row in losses.DB_DEFAULTS")
    if not read:
        source = ''
    elif given and len(given) == len(read):
        source = ' and '.join(given)
    elif given:
        source = f"{given[0]}; the other from {source}"
    return {'gamma': mu, 'neg_scale': lam}, source


def build_classification_loss(name, class_freq, neg_class_freq, dataset=None, gamma=None, neg_scale=None):
    """The classification loss called ``name`` (one of CLASSIFICATION_LOSSES)."""
    if name in _PLAIN_LOSSES:
        return _PLAIN_LOSSES[name]()
    if name not in _RESAMPLE_TABLE:
        raise ValueError(f"unknown classification loss {name!r}; expected one of {', '.join(CLASSIFICATION_LOSSES)}")
    mu, lam = resolve_db_params(dataset, gamma, neg_scale)
    return ResampleLoss(class_freq, neg_class_freq, map_gamma=mu, neg_scale=lam, **_RESAMPLE_TABLE[name])


# ---------------------------------------------------------------- class-specific embedding loss (SPEC §7)

def _inverse_norms(x, eps):
    """1 / |x| along the last dimension, 0 where |x| ≤ eps (such vectors count as cosine 0, gradient 0)."""
    norms = torch.linalg.vector_norm(x, dim=-1)
    return torch.where(norms > eps, 1.0 / norms.clamp_min(eps), torch.zeros_like(norms))


class _PromptCosineSum(torch.autograd.Function):
    """cos_sum[b, c] = Σ_t ⟨ê_b[t], p_c[t + m] / |p_c[t + m]|⟩ with a hand-written backward.

    ê [B, T, D]: unit caption vectors (or zero); prompts [C, L, D], T = L − m. Autograd through
    F.normalize and a matmul keeps the normalised prompts and several [C, T, D] temporaries alive
    in the backward pass; here the only [C, ·, D] buffers are one normalised copy in the forward
    (freed before it returns) and the gradient itself, written in place into a [C, L, D] tensor.
    Prompt vectors with |p| ≤ eps count as cosine 0 with zero gradient.
    """

    @staticmethod
    def forward(ctx, unit_captions, prompts, m_ctx, eps):
        tail = prompts[:, m_ctx:]  # [C, T, D] (a view)
        inv = _inverse_norms(tail, eps)  # [C, T]
        unit = tail * inv.unsqueeze(-1)  # [C, T, D] (temporary)
        cos_sum = unit_captions.reshape(unit_captions.shape[0], -1) @ unit.reshape(unit.shape[0], -1).t()  # [B, C]
        ctx.save_for_backward(unit_captions, prompts, inv)
        ctx.m_ctx = m_ctx
        return cos_sum

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # grad [B, C]
        unit_captions, prompts, inv = ctx.saved_tensors
        m = ctx.m_ctx
        num, length, dim = prompts.shape
        steps = length - m  # T
        grad_captions = grad_prompts = None
        tail = prompts[:, m:]  # [C, T, D]
        if ctx.needs_input_grad[0]:  # ∂/∂ê = grad @ unit prompts
            unit = tail * inv.unsqueeze(-1)  # [C, T, D]
            grad_captions = (grad @ unit.reshape(num, -1)).view_as(unit_captions)  # [B, T, D]
            del unit
        if ctx.needs_input_grad[1]:
            grad_prompts = torch.zeros_like(prompts)  # [C, L, D] contiguous; positions < m get no gradient
            g = grad_prompts[:, m:]  # [C, T, D] view: g = ∂/∂p̂ = grad^T @ ê, written in place
            g.view(num, steps * dim).addmm_(grad.t().to(prompts.dtype),
                                            unit_captions.reshape(unit_captions.shape[0], -1), beta=0)
            # p̂ = p / |p|  =>  ∂/∂p = (g − p̂ ⟨p̂, g⟩) / |p| = g·inv − p·⟨p, g⟩·inv³
            radial = torch.bmm(prompts.view(-1, 1, dim), grad_prompts.view(-1, dim, 1))  # ⟨p, g⟩ [C·L, 1, 1]
            radial = radial.view(num, length)[:, m:]  # [C, T]
            g.mul_(inv.unsqueeze(-1)).addcmul_(tail, (radial * inv.pow(3)).unsqueeze(-1), value=-1)
        return grad_captions, grad_prompts, None, None


def caption_prompt_distance(caption_embeddings, prompts, m_ctx, eps=1e-12):
    """d_ic = mean_t (1 − cos(E_i[t], P_c[t + m])), t = 0 … L−1−m; [B, C].

    caption_embeddings [B, L, D], prompts [C, L, D]. One [B, T·D] × [T·D, C] matmul on
    tensors normalised along D (vectors with norm ≤ eps count as cosine 0, with zero gradient),
    with a hand-written backward that never holds more than the gradient's [C, L, D] (_PromptCosineSum).
    """
    if caption_embeddings.dim() != 3 or prompts.dim() != 3 or caption_embeddings.shape[1:] != prompts.shape[1:]:
        raise ValueError(f"caption_prompt_distance: expected caption_embeddings [B, L, D] and prompts [C, L, D], "
                         f"got {tuple(caption_embeddings.shape)} and {tuple(prompts.shape)}")
    length = prompts.shape[1]
    if not isinstance(m_ctx, int) or isinstance(m_ctx, bool) or not 0 <= m_ctx < length:
        raise ValueError(f"caption_prompt_distance: m_ctx must be an integer in [0, {length - 1}], got {m_ctx!r}")
    steps = length - m_ctx  # T
    cap = caption_embeddings[:, :steps].to(prompts.dtype)
    cap = cap * _inverse_norms(cap, eps).unsqueeze(-1)  # [B, T, D] unit vectors (or zero)
    # contiguous (a no-op for the prompt learner's output): the backward views the prompts and their gradient
    cos_sum = _PromptCosineSum.apply(cap, prompts.contiguous(), m_ctx, eps)  # [B, C]
    return 1 - cos_sum / steps


def _fixed_margin(n, margin):
    return torch.full_like(n, margin)  # [C]: Δ


def _class_aware_margin(n, margin):
    return margin * (n.min() / n) ** 0.25  # [C]: Δ (min n / n_c)^{1/4}


def _uniform_weights(n, gamma):
    return torch.full_like(n, 1.0 / n.numel())  # [C]: 1/C


def _inverse_frequency_weights(n, gamma):
    return torch.softmax(-gamma * torch.log(n), dim=0)  # [C]: n^-γ / Σ n^-γ, without overflow


# Margins Δ_c and class weights w_c of each CSE kind (nn_hinge uses torch's HingeEmbeddingLoss and neither),
# called as fn(n [C] class counts in the loss's dtype, Δ or γ) -> [C]. A margin or weight with a setting of its
# own reads it from a new CSELoss attribute: change margins_and_weights, which calls them, for that kind.
_MARGINS = {'softmargin': _class_aware_margin, 'weighted': _fixed_margin, 'hinge': _fixed_margin}
_WEIGHTS = {'softmargin': _inverse_frequency_weights, 'weighted': _inverse_frequency_weights,
            'hinge': _uniform_weights}
# The flags of lmpt/train.py each CSE kind reads (--cse_margin: Δ; --cse_gamma: γ of w_c = n_c^-γ / Σ n^-γ):
# a flag given that the chosen kind does not read is noted as having no effect. --m_ctx (the distance) and
# --lam (the mix) are read by every kind. tests/test_flags_noted_unused.py checks that every kind has an entry and
# each entry against the loss.
CSE_LOSS_FLAGS = {'softmargin': ('cse_margin', 'cse_gamma'), 'weighted': ('cse_margin', 'cse_gamma'),
                  'hinge': ('cse_margin',), 'nn_hinge': ('cse_margin',)}


class CSELoss(nn.Module):
    """ℓ_ic = d_ic if y_ic = 1 else max(0, Δ_c − d_ic); L = Σ_c w_c · mean_i ℓ_ic.

    kind: 'softmargin' (Δ_c = Δ (min n / n_c)^{1/4}, w_c = n_c^-γ / Σ n^-γ), 'weighted' (Δ, w_c),
    'hinge' (Δ, 1/C), 'nn_hinge' (torch.nn.HingeEmbeddingLoss on d, mean).
    """

    def __init__(self, kind, class_freq, margin=DEFAULT_CSE_MARGIN, gamma=DEFAULT_CSE_GAMMA,
                 m_ctx=DEFAULT_M_CTX):
        super().__init__()
        if kind not in CSE_LOSSES:
            raise ValueError(f"unknown CSE loss {kind!r}; expected one of {', '.join(CSE_LOSSES)}")
        if not (math.isfinite(float(margin)) and margin >= 0):
            raise ValueError(f"CSE loss: margin must be a finite number >= 0, got {margin}")
        if not math.isfinite(float(gamma)):
            raise ValueError(f"CSE loss: gamma must be finite, got {gamma}")
        if not isinstance(m_ctx, int) or isinstance(m_ctx, bool) or m_ctx < 0:
            raise ValueError(f"CSE loss: m_ctx must be an integer >= 0, got {m_ctx!r}")
        if kind != 'nn_hinge' and (kind not in _MARGINS or kind not in _WEIGHTS):
            raise ValueError(f"CSE loss {kind!r}: no margins or class weights in lmpt.losses._MARGINS and "
                             f"_WEIGHTS; expected an entry in each")
        # a class without training images is fine where neither margin nor weight divides by its count
        divides = kind != 'nn_hinge' and (_MARGINS[kind], _WEIGHTS[kind]) != (_fixed_margin, _uniform_weights)
        n = _as_freq(class_freq, 'class_freq', allow_zero=not divides)  # [C]
        self.register_buffer('class_freq', n.float())  # [C]; margins and weights derived in the loss's dtype
        self.kind, self.margin, self.gamma, self.m_ctx = kind, float(margin), float(gamma), m_ctx

    def margins_and_weights(self, dtype):
        """Per-class margins Δ_c and weights w_c, each [C] (``_MARGINS`` and ``_WEIGHTS`` of the kind)."""
        n = self.class_freq.to(dtype)  # [C]
        return _MARGINS[self.kind](n, self.margin), _WEIGHTS[self.kind](n, self.gamma)

    def forward(self, caption_embeddings, prompts, targets):
        num = self.class_freq.numel()
        if prompts.dim() != 3 or prompts.shape[0] != num:
            raise ValueError(f"CSE loss: expected prompts [C={num}, L, D], got {tuple(prompts.shape)}")
        if targets.shape != (caption_embeddings.shape[0], num):
            raise ValueError(f"CSE loss: expected targets [B={caption_embeddings.shape[0]}, C={num}], "
                             f"got {tuple(targets.shape)}")
        d = caption_prompt_distance(caption_embeddings, prompts, self.m_ctx)  # [B, C]
        y = targets.to(d.dtype)
        if self.kind == 'nn_hinge':
            return F.hinge_embedding_loss(d, 2 * y - 1, margin=self.margin)
        margins, weights = self.margins_and_weights(d.dtype)
        per_pair = y * d + (1 - y) * torch.clamp(margins[None, :] - d, min=0)  # [B, C]
        return (per_pair * weights[None, :]).sum(dim=1).mean()


def build_cse_loss(name, class_freq, margin=DEFAULT_CSE_MARGIN, gamma=DEFAULT_CSE_GAMMA, m_ctx=DEFAULT_M_CTX):
    """The class-specific embedding loss called ``name`` (one of CSE_LOSSES)."""
    return CSELoss(name, class_freq, margin=margin, gamma=gamma, m_ctx=m_ctx)
