"""Losses against naive float64 references written from SPEC §6 and §7."""
import math

import numpy as np
import pytest
import torch

from lmpt.losses import (CLASSIFICATION_LOSSES, CSE_LOSSES, DB_DEFAULTS, DEFAULT_CSE_GAMMA, DEFAULT_CSE_MARGIN,
                         build_classification_loss, build_cse_loss, caption_prompt_distance)

# ---------------------------------------------------------------- naive references (loops over i, c)

# Flags of each SPEC §6 name: (reweight, NTR, focal balance f or None, loss weight)
SPEC_TABLE = {
    'dbl': ('rebalance', True, 2.0, 1.0),
    'DBloss': ('rebalance', True, 0.5, 1.0),
    'DBloss-noFocal': ('rebalance', True, None, 0.5),
    'FL': (None, False, 0.5, 1.0),
    'CBloss': ('CB', False, 0.5, 10.0),
    'CBloss-ntr': ('CB', True, 0.5, 10.0),
    'R-BCE-Focal': ('rebalance', False, 0.5, 1.0),
    'NTR-Focal': (None, True, 0.5, 1.0),
}


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def bce(z, y):
    p = sigmoid(z)
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def ref_db_family(name, z, y, n, neg, mu, lam):
    reweight, ntr, balance, loss_weight = SPEC_TABLE[name]
    B, C = z.shape
    total = 0.0
    for i in range(B):
        positives = [k for k in range(C) if y[i, k] == 1]
        for c in range(C):
            if reweight == 'rebalance':
                # published code: 1/0 = inf for a row without positives, sigma(inf) = 1
                r = (1 / n[c]) / sum(1 / n[k] for k in positives) if positives else math.inf
                w = 0.1 + 1.0 / (1.0 + math.exp(-10.0 * (r - mu)))
            elif reweight == 'CB':
                w = (1 - 0.9) / (1 - 0.9 ** n[c])
            else:
                w = 1.0
            zz = z[i, c]
            if ntr:
                big_n = n[c] + neg[c]
                zz = zz - math.log(big_n / n[c] - 1) * 0.05 / lam
                if y[i, c] == 0:
                    zz, w = lam * zz, w / lam
            ell = w * bce(zz, y[i, c])
            if balance is not None:
                p_t = math.exp(-bce(zz, y[i, c]))
                ell = balance * (1 - p_t) ** 2 * ell
            total += ell
    return loss_weight * total / (B * C)


def ref_bce(z, y):
    B, C = z.shape
    return sum(bce(z[i, c], y[i, c]) for i in range(B) for c in range(C)) / (B * C)


def ref_asl(z, y):
    B, C = z.shape
    total = 0.0
    for i in range(B):
        for c in range(C):
            p = sigmoid(z[i, c])
            if y[i, c] == 1:
                total += (1 - p) ** 0 * math.log(max(p, 1e-8))
            else:
                p_m = max(p - 0.05, 0.0)
                total += p_m ** 4 * math.log(max(1 - p_m, 1e-8))
    return -total / (B * C)


PLAIN_REFERENCES = {'bce': ref_bce, 'mls': ref_bce, 'asl': ref_asl}  # the losses without class statistics


def ref_classification(name, z, y, n, neg, mu, lam):
    if name in PLAIN_REFERENCES:
        return PLAIN_REFERENCES[name](z, y)
    if name not in SPEC_TABLE:
        raise KeyError(f"no reference for the loss {name!r}: add one to PLAIN_REFERENCES or SPEC_TABLE "
                       f"(tests/test_losses.py), written from its definition")
    return ref_db_family(name, z, y, n, neg, mu, lam)


@pytest.fixture
def small_case():
    """B=3, C=4: class 3 absent from the batch, row 2 all-negative."""
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, (3, 4))
    y = np.array([[1, 0, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=np.float64)
    n = rng.integers(2, 400, 4).astype(np.float64)
    neg = 1142 - n  # N images, the same for all classes
    return z, y, n, neg


def run_loss(loss, z, y, dtype=torch.float64):
    return loss(torch.tensor(z, dtype=dtype), torch.tensor(y, dtype=dtype))


# ---------------------------------------------------------------- classification losses

def test_names_match_spec():
    # SPEC §6's eleven losses; a loss added to the library needs its reference here (ref_classification)
    assert len(SPEC_TABLE) + len(PLAIN_REFERENCES) == 11
    missing = set(CLASSIFICATION_LOSSES) - set(SPEC_TABLE) - set(PLAIN_REFERENCES)
    assert not missing, f"losses without a reference in tests/test_losses.py: {sorted(missing)}"
    assert set(CLASSIFICATION_LOSSES) == set(SPEC_TABLE) | set(PLAIN_REFERENCES)
    # a name listed twice (a plain entry would silently shadow the table row of the same name)
    from lmpt.losses import _PLAIN_LOSSES, _RESAMPLE_TABLE
    assert not set(_PLAIN_LOSSES) & set(_RESAMPLE_TABLE), "a loss in both _PLAIN_LOSSES and _RESAMPLE_TABLE"
    assert len(CLASSIFICATION_LOSSES) == len(set(CLASSIFICATION_LOSSES)) == 11


@pytest.mark.parametrize('name', CLASSIFICATION_LOSSES)
@pytest.mark.parametrize('dataset', ['voc-lt', 'coco-lt'])
def test_loss_matches_naive_reference(name, dataset, small_case):
    z, y, n, neg = small_case
    mu, lam = DB_DEFAULTS[dataset]['gamma'], DB_DEFAULTS[dataset]['neg_scale']
    loss = build_classification_loss(name, n, neg, dataset=dataset)
    got = run_loss(loss, z, y).item()
    assert got == pytest.approx(ref_classification(name, z, y, n, neg, mu, lam), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize('name', ['dbl', 'DBloss', 'CBloss-ntr', 'NTR-Focal'])
def test_explicit_gamma_and_neg_scale_override_dataset(name, small_case):
    z, y, n, neg = small_case
    loss = build_classification_loss(name, torch.tensor(n), torch.tensor(neg), dataset='coco-lt',
                                      gamma=0.45, neg_scale=3.5)
    assert run_loss(loss, z, y).item() == pytest.approx(ref_db_family(name, z, y, n, neg, 0.45, 3.5), rel=1e-10)


def test_dataset_defaults_resolution(small_case):
    z, y, n, neg = small_case

    def value(**kw):
        return run_loss(build_classification_loss('dbl', n, neg, **kw), z, y).item()

    coco = DB_DEFAULTS['coco-lt']
    voc = DB_DEFAULTS['voc-lt']
    assert value(dataset='coco-lt') == value(gamma=coco['gamma'], neg_scale=coco['neg_scale'])
    assert value(dataset='voc-lt') == value(gamma=voc['gamma'], neg_scale=voc['neg_scale'])
    # anything else falls back to the VOC-LT values
    assert value(dataset='synth-lt') == value(dataset='voc-lt') == value()
    assert value(dataset='coco-lt') != value(dataset='voc-lt')
    # one explicit value, the other from the dataset
    assert value(dataset='coco-lt', gamma=0.45) == value(gamma=0.45, neg_scale=coco['neg_scale'])


def test_spec_dataset_defaults():
    assert DB_DEFAULTS['voc-lt'] == dict(gamma=0.3, neg_scale=5.0)
    assert DB_DEFAULTS['coco-lt'] == dict(gamma=0.2, neg_scale=2.0)


def test_all_negative_row_is_finite_and_uses_the_published_limit(small_case):
    z, _, n, neg = small_case
    y = np.zeros_like(z)
    zt = torch.tensor(z, requires_grad=True)
    for name in ('dbl', 'R-BCE-Focal', 'DBloss-noFocal'):
        loss = build_classification_loss(name, n, neg)
        value = loss(zt, torch.tensor(y))
        (grad,) = torch.autograd.grad(value, zt)
        assert torch.isfinite(value) and torch.isfinite(grad).all()
        assert value.item() == pytest.approx(ref_db_family(name, z, y, n, neg, 0.3, 5.0), rel=1e-10)


@pytest.mark.parametrize('name', CLASSIFICATION_LOSSES)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_extreme_logits_stay_finite(name, dtype, small_case):
    _, y, n, neg = small_case
    z = torch.tensor([[1e4, -1e4, 1e4, 1e4], [-1e4, 1e4, -1e4, -1e4], [1e4, 1e4, -1e4, 0.0]], dtype=dtype,
                     requires_grad=True)
    loss = build_classification_loss(name, n, neg)
    value = loss(z, torch.tensor(y, dtype=dtype))
    value.backward()
    assert torch.isfinite(value), name
    assert torch.isfinite(z.grad).all(), name


@pytest.mark.parametrize('name', ['dbl', 'CBloss-ntr', 'DBloss-noFocal', 'bce'])
def test_gradcheck(name, small_case):
    z, y, n, neg = small_case
    loss = build_classification_loss(name, n, neg)
    yt = torch.tensor(y)
    assert torch.autograd.gradcheck(lambda x: loss(x, yt), (torch.tensor(z, requires_grad=True),))


@pytest.mark.parametrize('name', ['dbl', 'NTR-Focal', 'CBloss-ntr', 'R-BCE-Focal'])
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision_logits_are_computed_in_float32(name, dtype):
    # 1,141 and 1,142 are one number in bf16 (1,144): a bias computed there was −log(0) = inf, the loss NaN.
    n = np.array([1141.0, 10.0, 500.0])
    neg = 1142 - n
    loss = build_classification_loss(name, n, neg)
    z = (torch.randn(4, 3, generator=torch.Generator().manual_seed(0)) * 3).to(dtype).requires_grad_(True)
    y = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 0]])
    value = loss(z, y)
    value.backward()
    assert value.dtype == torch.float32 and z.grad.dtype == dtype and torch.isfinite(z.grad.float()).all()
    assert value.item() == pytest.approx(loss(z.detach().float(), y).item(), rel=1e-6)  # the same values in fp32
    assert torch.isfinite(loss.bias(dtype)).all()
    assert loss.bias(torch.float64)[0].item() == pytest.approx(-math.log(1142 / 1141 - 1) * 0.05 / 5, rel=1e-12)


def test_asl_gradient_treats_focusing_weights_as_constants(small_case):
    z, y, n, neg = small_case
    zt = torch.tensor(z, requires_grad=True)
    yt = torch.tensor(y)
    (got,) = torch.autograd.grad(build_classification_loss('asl', n, neg)(zt, yt), zt)
    p = torch.sigmoid(zt)
    p_m = (p - 0.05).clamp(min=0)
    log_terms = yt * torch.log(p.clamp(min=1e-8)) + (1 - yt) * torch.log((1 - p_m).clamp(min=1e-8))
    focus = torch.where(yt > 0, torch.ones_like(p), p_m.detach() ** 4)
    (expected,) = torch.autograd.grad(-(focus * log_terms).mean(), zt)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_loss_lowers_when_trained(small_case):
    _, y, n, neg = small_case
    z = torch.zeros(3, 4, requires_grad=True)
    loss = build_classification_loss('dbl', n, neg)
    yt = torch.tensor(y, dtype=torch.float32)
    start = loss(z, yt).item()
    opt = torch.optim.SGD([z], lr=5.0)
    for _ in range(50):
        opt.zero_grad()
        loss(z, yt).backward()
        opt.step()
    assert loss(z, yt).item() < 0.5 * start
    assert ((z > 0) == (yt > 0)).all()


def test_buffers_move_and_cast(small_case):
    z, y, n, neg = small_case
    loss = build_classification_loss('dbl', n, neg)
    buffers = dict(loss.named_buffers())
    assert torch.equal(buffers['class_freq'].double(), torch.tensor(n))
    assert torch.equal(buffers['neg_class_freq'].double(), torch.tensor(neg))
    moved = loss.to(torch.float64)
    assert moved.class_freq.dtype == torch.float64
    assert run_loss(moved, z, y).item() == pytest.approx(ref_db_family('dbl', z, y, n, neg, 0.3, 5.0), rel=1e-10)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        build_classification_loss('focal', np.ones(3), np.ones(3))
    for name in CLASSIFICATION_LOSSES:
        assert name in str(err.value)


def test_bad_inputs_are_refused(small_case):
    z, y, n, neg = small_case
    with pytest.raises(ValueError, match='class_freq'):
        build_classification_loss('dbl', np.array([3.0, 0.0, 2.0, 1.0]), neg)
    with pytest.raises(ValueError, match='differ in length'):
        build_classification_loss('dbl', n, neg[:3])
    loss = build_classification_loss('dbl', n, neg)
    with pytest.raises(ValueError, match='C = 4'):
        loss(torch.zeros(3, 5), torch.zeros(3, 5))
    with pytest.raises(ValueError, match='same shape'):
        loss(torch.zeros(3, 4), torch.zeros(2, 4))
    # a count of 0 is fine for losses that do not use the counts
    assert torch.isfinite(run_loss(build_classification_loss('bce', np.zeros(4), np.zeros(4)), z, y))


# ---------------------------------------------------------------- class-specific embedding loss

def ref_distance(E, P, m):
    """Materialises [B, C, T, D] and takes an explicit cosine per token (zero vector: cosine 0)."""
    B, L, D = E.shape
    C = P.shape[0]
    T = L - m
    e = E[:, None, :T, :].expand(B, C, T, D)  # [B, C, T, D]
    p = P[None, :, m:, :].expand(B, C, T, D)  # [B, C, T, D]
    dot = (e * p).sum(-1)
    norms = e.norm(dim=-1) * p.norm(dim=-1)
    cos = torch.where(norms > 0, dot / torch.where(norms > 0, norms, torch.ones_like(norms)), torch.zeros_like(dot))
    return (1 - cos).mean(-1)  # [B, C]


def ref_cse(kind, d, y, n, margin, gamma):
    if kind not in ('softmargin', 'weighted', 'hinge', 'nn_hinge'):
        raise KeyError(f"no reference for the CSE loss {kind!r}; write one here (SPEC §7)")
    B, C = d.shape
    if kind == 'softmargin':
        margins = [margin * (min(n) / n[c]) ** 0.25 for c in range(C)]
    else:
        margins = [margin] * C
    if kind in ('softmargin', 'weighted'):
        weights = [n[c] ** -gamma / sum(n[k] ** -gamma for k in range(C)) for c in range(C)]
    else:
        weights = [1.0 / C] * C
    total = 0.0
    for i in range(B):
        for c in range(C):
            ell = d[i, c] if y[i, c] == 1 else max(0.0, margins[c] - d[i, c])
            if kind == 'nn_hinge':  # mean over B x C of the plain hinge
                total += ell / C
            else:
                total += weights[c] * ell
    return total / B


@pytest.fixture
def cse_case():
    torch.manual_seed(0)
    B, C, L, D = 3, 4, 77, 8
    E = torch.randn(B, L, D, dtype=torch.float64)
    E[:, 20:] = 0.0  # padding rows may be zero vectors
    P = torch.randn(C, L, D, dtype=torch.float64)
    P[1, 30:] = 0.0
    y = torch.tensor([[1, 0, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.float64)
    n = np.array([250.0, 40.0, 9.0, 3.0])
    return E, P, y, n


@pytest.mark.parametrize('m_ctx', [0, 1, 4, 76])
def test_distance_matches_naive_reference(m_ctx, cse_case):
    E, P, _, _ = cse_case
    got = caption_prompt_distance(E, P, m_ctx)
    assert got.shape == (3, 4)
    torch.testing.assert_close(got, ref_distance(E, P, m_ctx), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('m_ctx', [0, 2, 76])
def test_distance_gradient_matches_autograd_of_naive_reference(m_ctx, cse_case):
    # The hand-written backward against autograd through the [B, C, T, D] reference; P[1, 30:] holds
    # zero vectors, whose cosine counts as 0 with zero gradient in both.
    E, P, _, _ = cse_case
    weights = torch.randn(3, 4, dtype=torch.float64)
    grads = []
    for fn in (caption_prompt_distance, ref_distance):
        e, p = E.clone().requires_grad_(), P.clone().requires_grad_()
        (fn(e, p, m_ctx) * weights).sum().backward()
        grads.append((e.grad, p.grad))
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert grads[0][1][:, :m_ctx].abs().max().item() == 0 if m_ctx else True  # positions < m get nothing


def test_distance_of_prompts_laid_out_otherwise_has_the_same_values_and_gradient(cse_case):
    # A [C, L, D] view of an [L, C, D] tensor (not contiguous): the backward once failed on its .view().
    E, P, _, _ = cse_case
    weights = torch.randn(3, 4, dtype=torch.float64)
    grads = []
    for layout in ('contiguous', 'sequence first'):
        base = (P if layout == 'contiguous' else P.transpose(0, 1).contiguous()).clone().requires_grad_()
        prompts = base if layout == 'contiguous' else base.transpose(0, 1)  # [C, L, D]
        distance = caption_prompt_distance(E, prompts, 2)
        (distance * weights).sum().backward()
        grads.append((distance.detach(), base.grad if layout == 'contiguous' else base.grad.transpose(0, 1)))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=0, atol=0)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-12, atol=1e-15)


def test_distance_passes_gradcheck():
    torch.manual_seed(3)
    e = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    p = torch.randn(3, 6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: caption_prompt_distance(a, b, 2), (e, p))


@pytest.mark.parametrize('kind', CSE_LOSSES)
@pytest.mark.parametrize('margin,gamma', [(0.5, 1.0), (1.2, 0.3), (3.0, 0.5)])
def test_cse_loss_matches_naive_reference(kind, margin, gamma, cse_case):
    E, P, y, n = cse_case
    loss = build_cse_loss(kind, n, margin, gamma, 4)
    d = ref_distance(E, P, 4).numpy()
    expected = ref_cse(kind, d, y.numpy(), n, margin, gamma)
    assert loss(E, P, y).item() == pytest.approx(expected, rel=1e-10)


def test_margin_decides_which_negatives_count(cse_case):
    E, P, _, n = cse_case
    y = torch.zeros(3, 4, dtype=torch.float64)
    d = caption_prompt_distance(E, P, 2)
    small = build_cse_loss('hinge', n, float(d.min()) - 1e-6, 1.0, 2)
    assert small(E, P, y).item() == 0.0  # every negative already beyond the margin
    big = build_cse_loss('hinge', n, float(d.max()) + 0.5, 1.0, 2)
    assert big(E, P, y).item() == pytest.approx(float((d.max() + 0.5 - d).mean()), rel=1e-12)


def test_offset_m_ctx_aligns_caption_with_prompt():
    torch.manual_seed(1)
    L, D, m = 77, 6, 5
    E = torch.randn(1, L, D, dtype=torch.float64)
    P = torch.randn(1, L, D, dtype=torch.float64)
    P[0, m:] = 3.0 * E[0, :L - m]  # the caption's tokens sit m positions later in the prompt
    assert caption_prompt_distance(E, P, m).item() == pytest.approx(0.0, abs=1e-12)
    assert caption_prompt_distance(E, P, m - 1).item() > 0.5
    assert caption_prompt_distance(E, P, 0).item() > 0.5


def test_gradient_reaches_prompts_only_at_compared_positions(cse_case):
    E, P, y, n = cse_case
    m = 3
    P = P.clone().requires_grad_(True)
    build_cse_loss('softmargin', n, 2.0, 1.0, m)(E, P, y).backward()
    assert P.grad.abs()[:, m:].sum() > 0
    assert torch.equal(P.grad[:, :m], torch.zeros_like(P.grad[:, :m]))  # never compared with the caption
    assert torch.isfinite(P.grad).all()


def test_prompts_learn_towards_positive_captions():
    torch.manual_seed(2)
    B, C, L, D = 6, 3, 77, 8
    E = torch.randn(B, L, D)
    y = torch.zeros(B, C)
    y[torch.arange(B), torch.arange(B) % C] = 1
    P = torch.randn(C, L, D, requires_grad=True)
    loss = build_cse_loss('softmargin', np.array([50.0, 20.0, 5.0]), 1.5, 1.0, 0)
    start = loss(E, P, y).item()
    opt = torch.optim.Adam([P], lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        loss(E, P, y).backward()
        opt.step()
    assert loss(E, P, y).item() < 0.5 * start
    d = caption_prompt_distance(E, P.detach(), 0)
    assert (d[y > 0].mean() < d[y == 0].mean()).item()


def test_cse_defaults_and_errors(cse_case):
    E, P, y, n = cse_case
    assert build_cse_loss('softmargin', n).margin == DEFAULT_CSE_MARGIN
    assert build_cse_loss('softmargin', n).gamma == DEFAULT_CSE_GAMMA
    from lmpt.train import build_parser
    assert build_cse_loss('softmargin', n).m_ctx == build_parser().get_default('m_ctx') == 2  # library = CLI
    with pytest.raises(ValueError) as err:
        build_cse_loss('triplet', n, 0.5, 1.0, 0)
    for name in CSE_LOSSES:
        assert name in str(err.value)
    with pytest.raises(ValueError, match='class_freq'):
        build_cse_loss('softmargin', np.array([3.0, 0.0, 1.0, 2.0]), 0.5, 1.0, 0)
    with pytest.raises(ValueError, match='m_ctx'):
        build_cse_loss('hinge', n, 0.5, 1.0, 77)(E, P, y)
    with pytest.raises(ValueError, match='prompts'):
        build_cse_loss('hinge', n, 0.5, 1.0, 0)(E, P[:3], y)
    with pytest.raises(ValueError, match='targets'):
        build_cse_loss('hinge', n, 0.5, 1.0, 0)(E, P, y[:2])


def test_cse_huge_gamma_does_not_overflow(cse_case):
    E, P, y, n = cse_case
    value = build_cse_loss('softmargin', n * 1e6, 0.5, 60.0, 0)(E.float(), P.float(), y.float())
    assert torch.isfinite(value)


def test_db_params_say_where_mu_and_lambda_came_from():
    from lmpt.losses import db_params
    assert db_params('bce', 'voc-lt') == ({}, '')
    assert db_params('dbl', 'coco-lt') == ({'gamma': 0.2, 'neg_scale': 2.0}, "coco-lt's defaults")
    assert db_params('dbl', 'no-such-set', gamma=0.1) == (
        {'gamma': 0.1, 'neg_scale': 5.0}, "--gamma; the other from voc-lt's defaults: no-such-set has no row in "
                                          "losses.DB_DEFAULTS")
    assert db_params('DBloss', 'voc-lt', 0.5, 1.5) == ({'gamma': 0.5, 'neg_scale': 1.5}, "--gamma and --neg_scale")
    # where a loss reads one of them (losses.db_flags_read), the source speaks of that one alone
    assert db_params('NTR-Focal', 'voc-lt', 0.5, 1.5) == ({'gamma': 0.5, 'neg_scale': 1.5}, "--neg_scale")
    assert db_params('R-BCE-Focal', 'coco-lt', neg_scale=1.5) == ({'gamma': 0.2, 'neg_scale': 1.5},
                                                                  "coco-lt's defaults")
    assert db_params('CBloss', 'voc-lt', 0.5, 1.5) == ({'gamma': 0.5, 'neg_scale': 1.5}, '')


def test_a_db_defaults_row_under_an_alias_is_refused():
    from lmpt.data import DATASETS
    from lmpt.losses import check_db_defaults
    check_db_defaults()  # the shipped table
    with pytest.raises(ValueError, match="'VOC' is not the name of a dataset; expected one of voc-lt, coco-lt"):
        check_db_defaults({'VOC': dict(gamma=0.3, neg_scale=5.0)}, DATASETS)


def test_a_cse_kind_without_margins_or_weights_is_refused(monkeypatch, cse_case):
    """An embedding loss added to CSE_LOSSES alone would otherwise fall into another kind's margins."""
    import lmpt.losses as losses
    E, P, y, n = cse_case
    monkeypatch.setattr(losses, 'CSE_LOSSES', losses.CSE_LOSSES + ('sqrtmargin',))
    with pytest.raises(ValueError, match="'sqrtmargin': no margins or class weights in lmpt.losses._MARGINS"):
        build_cse_loss('sqrtmargin', n)
    monkeypatch.setitem(losses._MARGINS, 'sqrtmargin', lambda n, margin: margin * (n.min() / n) ** 0.5)
    monkeypatch.setitem(losses._WEIGHTS, 'sqrtmargin', losses._uniform_weights)
    margins, weights = build_cse_loss('sqrtmargin', n, 0.5).margins_and_weights(torch.float64)
    assert torch.allclose(margins, 0.5 * (n.min() / torch.as_tensor(n, dtype=torch.float64)) ** 0.5)
    assert torch.allclose(weights, torch.full((len(n),), 1 / len(n), dtype=torch.float64))

