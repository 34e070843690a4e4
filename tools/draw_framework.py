"""Draw framework.png, the LMPT framework figure (matplotlib, Agg, deterministic).

Usage: python tools/draw_framework.py [--out PATH] [--check]

The canvas is a 160 x 80 grid of data units (1 unit = 10 px at 150 dpi), so
every position below is a plain number on that grid.
"""
import argparse
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import (  # noqa: E402
    Circle,
    FancyArrowPatch,
    FancyBboxPatch,
    Polygon,
    Rectangle,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "framework.png"

WIDTH, HEIGHT, DPI = 160, 80, 150  # grid units; 1 unit = 10 px -> 1600 x 800 px

# colour roles: (face, edge)
FROZEN = ("#dce9f7", "#2f6db5")
LEARNABLE = ("#fde2c4", "#e07000")
LOSS = ("#fbe1df", "#c0392b")
DATA = ("#f1f1f1", "#6b6b6b")
FEATURE = ("#e3f1e3", "#3d8b3d")
INK = "#222222"
GRAD = "#c0392b"

FONT = 7.0  # pt; body text
SMALL = 6.2  # pt; shapes and side notes


def box(ax, x, y, w, h, colours, lw=1.1, radius=0.8, z=2):
    """Rounded box with its lower-left corner at (x, y)."""
    face, edge = colours
    patch = FancyBboxPatch(
        (x + radius, y + radius), w - 2 * radius, h - 2 * radius,
        boxstyle=f"round,pad={radius}", facecolor=face, edgecolor=edge, lw=lw, zorder=z,
    )
    ax.add_patch(patch)
    return patch


def text(ax, x, y, s, size=FONT, colour=INK, ha="center", va="center", weight="normal", **kw):
    return ax.text(x, y, s, fontsize=size, color=colour, ha=ha, va=va,
                   fontweight=weight, zorder=6, **kw)


def arrow(ax, points, colour=INK, dashed=False, lw=1.1):
    """Poly-line through `points` with an arrow head on the last segment."""
    style = (0, (4, 2.5)) if dashed else "-"
    xs, ys = zip(*points[:-1])
    if len(points) > 2:
        ax.plot(xs, ys, color=colour, lw=lw, linestyle=style, zorder=3,
                solid_capstyle="butt", dash_capstyle="butt")
    ax.add_patch(FancyArrowPatch(
        points[-2], points[-1], arrowstyle="-|>", mutation_scale=9, color=colour,
        lw=lw, linestyle=style, shrinkA=0, shrinkB=0, zorder=3,
    ))


def snowflake(ax, cx, cy, r, colour):
    """Six-armed snowflake: the 'frozen' mark."""
    for k in range(6):
        a = math.pi / 3 * k + math.pi / 2
        ex, ey = cx + r * math.cos(a), cy + r * math.sin(a)
        ax.plot([cx, ex], [cy, ey], color=colour, lw=0.9, zorder=7, solid_capstyle="round")
        bx, by = cx + 0.6 * r * math.cos(a), cy + 0.6 * r * math.sin(a)
        for side in (-1, 1):
            b = a + side * math.pi / 4
            ax.plot([bx, bx + 0.35 * r * math.cos(b)], [by, by + 0.35 * r * math.sin(b)],
                    color=colour, lw=0.9, zorder=7, solid_capstyle="round")


def flame(ax, cx, cy, s, colour):
    """Small flame: the 'learnable' mark (s = height)."""
    outer = [(0, -0.5), (0.32, -0.38), (0.4, -0.08), (0.25, 0.18), (0.12, 0.5),
             (0.02, 0.22), (-0.16, 0.34), (-0.38, -0.02), (-0.32, -0.38)]
    inner = [(0, -0.44), (0.16, -0.32), (0.18, -0.1), (0.05, 0.08), (-0.12, -0.08),
             (-0.16, -0.32)]
    for pts, face in ((outer, colour), (inner, "#ffd23f")):
        ax.add_patch(Polygon([(cx + s * px, cy + s * py) for px, py in pts], closed=True,
                             facecolor=face, edgecolor="none", zorder=7))


def frozen_box(ax, x, y, w, h, title):
    """Blue frozen-module box with a snowflake and a 'frozen' tag."""
    box(ax, x, y, w, h, FROZEN)
    text(ax, x + w / 2, y + h / 2 + 0.6, title, weight="bold")
    snowflake(ax, x + w / 2 - 3.4, y + 2.2, 1.15, FROZEN[1])
    text(ax, x + w / 2 + 1.0, y + 2.2, "frozen", size=SMALL, colour=FROZEN[1], style="italic")


def image_placeholder(ax, x, y, w, h):
    """A tiny cartoon scene standing in for the input image."""
    ax.add_patch(Rectangle((x, y), w, h, facecolor="#cfe8ff", edgecolor="#444444", lw=1.0, zorder=2))
    ax.add_patch(Rectangle((x, y), w, h * 0.35, facecolor="#a8d5a2", edgecolor="none", zorder=3))
    ax.add_patch(Circle((x + w * 0.82, y + h * 0.78), h * 0.11, facecolor="#ffd23f",
                        edgecolor="none", zorder=3))
    # sofa
    ax.add_patch(Rectangle((x + w * 0.08, y + h * 0.22), w * 0.55, h * 0.2,
                           facecolor="#b5651d", edgecolor="none", zorder=4))
    ax.add_patch(Rectangle((x + w * 0.08, y + h * 0.42), w * 0.55, h * 0.14,
                           facecolor="#8b4513", edgecolor="none", zorder=4))
    # person
    ax.add_patch(Circle((x + w * 0.22, y + h * 0.7), h * 0.07, facecolor="#f1c27d",
                        edgecolor="none", zorder=5))
    ax.add_patch(Rectangle((x + w * 0.17, y + h * 0.42), w * 0.1, h * 0.21,
                           facecolor="#3b6fb6", edgecolor="none", zorder=5))
    # dog
    ax.add_patch(Polygon([(x + w * 0.4, y + h * 0.42), (x + w * 0.58, y + h * 0.42),
                          (x + w * 0.58, y + h * 0.55), (x + w * 0.44, y + h * 0.52)],
                         closed=True, facecolor="#5a3d2b", edgecolor="none", zorder=5))
    ax.add_patch(Circle((x + w * 0.6, y + h * 0.58), h * 0.06, facecolor="#5a3d2b",
                        edgecolor="none", zorder=5))


def token(ax, x, y, w, h, label, colours, size=FONT):
    box(ax, x, y, w, h, colours, lw=0.9, radius=0.45, z=4)
    text(ax, x + w / 2, y + h / 2, label, size=size)


def prompt_panel(ax, x, y, w, h):
    """Class-specific prompts [V]_1 ... [V]_M [CLASS_c] for c = 1..C."""
    box(ax, x, y, w, h, ("#fff7ee", LEARNABLE[1]), lw=1.1)
    text(ax, x + 1.4, y + h - 2.0, "learnable class-specific prompts", ha="left", weight="bold")
    flame(ax, x + w - 2.4, y + h - 2.0, 2.2, LEARNABLE[1])
    rows = [(y + h - 7.2, "1"), (y + h - 12.0, "2"), (None, None), (y + 2.6, "C")]
    tw, th = 5.6, 3.4
    for ry, c in rows:
        if ry is None:  # vertical ellipsis between class 2 and class C
            text(ax, x + 16, y + 8.6, r"$\vdots$", size=FONT + 1)
            continue
        text(ax, x + 2.6, ry + th / 2, rf"$c\!=\!{c}$", size=SMALL)
        tx = x + 5.2
        for label in (r"$[V]_1$", r"$[V]_2$", None, r"$[V]_M$"):
            if label is None:
                text(ax, tx + 1.3, ry + th / 2, r"$\cdots$")
                tx += 2.6
                continue
            token(ax, tx, ry, tw, th, label, LEARNABLE)
            tx += tw + 0.6
        token(ax, tx + 0.4, ry, 10.6, th, rf"$[\mathrm{{CLASS}}_{c}]$", DATA)


def feature_stack(ax, x, y, w, labels, step=2.9, bar=2.2):
    """Stacked feature bars, top to bottom; returns the y centre of each bar."""
    centres = []
    for k, label in enumerate(labels):
        cy = y - k * step
        if label is None:
            text(ax, x + w / 2, cy + 0.2, r"$\vdots$")
            continue
        ax.add_patch(Rectangle((x, cy - bar / 2), w, bar, facecolor=FEATURE[0],
                               edgecolor=FEATURE[1], lw=0.9, zorder=4))
        text(ax, x + w / 2, cy, label, size=SMALL + 0.4)
        centres.append(cy)
    return centres


def logits_grid(ax, x, y, cell=1.6, rows=3, cols=5):
    """A small heat-map standing in for the logits matrix [B, C]."""
    shades = ["#f7c6c0", "#e98b7f", "#fbe7e4", "#d65a4a", "#f2aca2"]
    for r in range(rows):
        for c in range(cols):
            ax.add_patch(Rectangle((x + c * cell, y + r * cell), cell, cell,
                                   facecolor=shades[(r * 2 + c * 3) % len(shades)],
                                   edgecolor="white", lw=0.6, zorder=4))


def draw(out):
    """Render the figure to `out` (PNG) and return the matplotlib figure."""
    plt.rcParams.update({"font.family": "DejaVu Sans", "mathtext.fontset": "dejavusans"})
    fig = plt.figure(figsize=(WIDTH / 15, HEIGHT / 15), dpi=DPI)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, WIDTH)
    ax.set_ylim(0, HEIGHT)
    ax.set_axis_off()

    text(ax, WIDTH / 2, 77.2, "LMPT: prompt tuning with class-specific embedding loss",
         size=11, weight="bold")

    # --- top row: learnable prompts -> frozen text encoder -> t_1..t_C ----------
    prompt_panel(ax, 3, 47, 40, 23)
    frozen_box(ax, 50, 52, 17, 13, "CLIP text\nencoder")
    arrow(ax, [(43, 58.5), (50, 58.5)])
    t_centres = feature_stack(ax, 73, 64, 9,
                              [r"$t_1$", r"$t_2$", None, r"$t_C$"])
    text(ax, 77.5, 67.2, r"text features $[C, D]$", size=SMALL)
    arrow(ax, [(67, 58.5), (73, 58.5)])

    # --- middle row: image -> frozen image encoder -> f ---------------------------
    image_placeholder(ax, 20, 32.5, 19, 12.5)
    text(ax, 29.5, 31.0, "input image $x$", size=SMALL)
    frozen_box(ax, 50, 32, 17, 13, "CLIP image\nencoder")
    arrow(ax, [(39, 38.5), (50, 38.5)])
    f_centre = feature_stack(ax, 73, 38.5, 9, [r"$f$"])[0]
    text(ax, 77.5, 41.4, r"image feature $[B, D]$", size=SMALL)
    arrow(ax, [(67, 38.5), (73, 38.5)])

    # --- similarity -> logits -> L_cls ---------------------------------------------
    box(ax, 89, 44, 21, 11, DATA)
    text(ax, 99.5, 51.6, "cosine similarity", weight="bold")
    text(ax, 99.5, 48.6, r"$\cos(f, t_c)\cdot \exp(\tau)$")
    text(ax, 99.5, 46.0, r"($\tau$: CLIP logit scale)", size=SMALL)
    # bracket gathering t_1..t_C, then one arrow into the similarity
    ax.plot([82.6, 83.6, 83.6, 82.6], [t_centres[0], t_centres[0], t_centres[-1], t_centres[-1]],
            color=INK, lw=1.0, zorder=3)
    t_mid = (t_centres[0] + t_centres[-1]) / 2
    arrow(ax, [(83.6, t_mid), (85.5, t_mid), (85.5, 52), (89, 52)])
    arrow(ax, [(82, f_centre), (85.5, f_centre), (85.5, 47), (89, 47)])
    logits_grid(ax, 114.5, 47.1)
    text(ax, 118.5, 53.6, r"logits $[B, C]$", size=SMALL)
    arrow(ax, [(110, 49.5), (114.5, 49.5)])

    box(ax, 127, 42, 30, 17, LOSS)
    text(ax, 142, 56.0, r"$\mathcal{L}_{cls}$: Distribution-Balanced loss", weight="bold")
    for k, line in enumerate(["• re-balanced weighting",
                              "• negative-tolerant regularisation",
                              "• focal term"]):
        text(ax, 129, 52.4 - 3.0 * k, line, ha="left")
    text(ax, 142, 44.0, r"targets $y\in\{0,1\}^{C}$", size=SMALL, colour="#555555")
    arrow(ax, [(122.5, 49.5), (127, 49.5)])

    # --- bottom row: caption -> tokenizer -> frozen token embedding -> E_i ------
    box(ax, 3, 8, 27, 15, DATA)
    text(ax, 16.5, 20.2, "caption of $x$", weight="bold")
    text(ax, 16.5, 14.6, "\u201ca dog and a person\non a sofa \u2026\u201d", style="italic")
    text(ax, 16.5, 10.0, "(first 75 characters)", size=SMALL, colour="#555555")
    box(ax, 34, 11.5, 11, 8, DATA)
    text(ax, 39.5, 15.5, "tokenizer", weight="bold")
    arrow(ax, [(30, 15.5), (34, 15.5)])
    frozen_box(ax, 50, 9, 17, 13, "token\nembedding")
    arrow(ax, [(45, 15.5), (50, 15.5)])
    for k in range(6):  # caption token embeddings E_i
        ax.add_patch(Rectangle((71.5 + k * 1.5, 13.5), 1.3, 4.0, facecolor=FEATURE[0],
                               edgecolor=FEATURE[1], lw=0.8, zorder=4))
    text(ax, 76.0, 19.6, r"$E_i$  $[77, D]$", size=SMALL + 0.4)
    arrow(ax, [(67, 15.5), (71.3, 15.5)])

    # --- class-specific embedding loss -----------------------------------------------
    box(ax, 85, 2.4, 37, 23.6, LOSS)
    text(ax, 103.5, 23.3, r"$\mathcal{L}_{cse}$: class-specific embedding loss", weight="bold")
    lines = [
        r"$d_{ic} = \mathrm{mean}_t\,[\,1-\cos(E_i[t],\,P_c[t+m])\,]$",
        r"class present ($y_{ic}=1$): pull, $\ell_{ic} = d_{ic}$",
        r"class absent ($y_{ic}=0$): push, $\ell_{ic} = \max(0, \Delta_c - d_{ic})$",
        r"soft margin $\Delta_c = \Delta\,(n_{min}/n_c)^{1/4}$",
        r"class weight $w_c \propto n_c^{-\gamma}$,  $\mathcal{L}_{cse} = \frac{1}{B}\sum_{i,c} w_c\,\ell_{ic}$",
    ]
    for k, line in enumerate(lines):
        text(ax, 86.8, 19.7 - 3.6 * k, line, ha="left", size=SMALL + 0.3)
    arrow(ax, [(80.8, 15.5), (85, 15.5)])
    # prompt token embeddings P_c run from the prompt panel down to L_cse
    arrow(ax, [(8, 47), (8, 27.8), (103.5, 27.8), (103.5, 26)], colour=LEARNABLE[1])
    text(ax, 40, 29.0, r"prompt token embeddings $P_c$ (compared at offset $m$ tokens)",
         size=SMALL, colour=LEARNABLE[1], ha="left")

    # --- total loss and gradient path ------------------------------------------------
    box(ax, 127, 8, 30, 15, ("#f9cfcb", LOSS[1]), lw=1.4)
    text(ax, 142, 18.6, "total loss", weight="bold")
    text(ax, 142, 13.4, r"$\mathcal{L} = \lambda\,\mathcal{L}_{cls} + (1-\lambda)\,\mathcal{L}_{cse}$",
         size=FONT + 0.6)
    arrow(ax, [(142, 42), (142, 23)], colour=LOSS[1])
    arrow(ax, [(122, 15.5), (127, 15.5)], colour=LOSS[1])
    arrow(ax, [(157, 15.5), (158.8, 15.5), (158.8, 73.2), (23, 73.2), (23, 70)],
          colour=GRAD, dashed=True, lw=1.3)
    text(ax, 90, 71.6, r"gradient $\nabla\mathcal{L}$: only the prompt context vectors "
         r"$[V]_1 \ldots [V]_M$ are updated", size=SMALL, colour=GRAD, style="italic")

    # --- legend: two rows of three entries ----------------------------------------------
    lx, ly = 89.5, 29.6
    box(ax, lx, ly, 47, 10.4, ("white", "#999999"), lw=0.8, radius=0.5)
    col = 15.6
    rows = [
        [(FROZEN, "frozen", "snow"), (LEARNABLE, "learnable", "flame"), (DATA, "data / op", None)],
        [(LOSS, "loss", None), (FEATURE, "feature", None), (None, "gradient", "grad")],
    ]
    for r, row in enumerate(rows):
        cy = ly + 7.6 - 4.8 * r
        for k, (colours, label, mark) in enumerate(row):
            ex = lx + 1.4 + k * col
            if mark == "grad":
                arrow(ax, [(ex, cy), (ex + 4.6, cy)], colour=GRAD, dashed=True)
                text(ax, ex + 5.6, cy, label, size=SMALL, ha="left")
                continue
            box(ax, ex, cy - 1.3, 3.0, 2.6, colours, lw=0.9, radius=0.35, z=4)
            if mark == "snow":
                snowflake(ax, ex + 4.8, cy, 0.95, FROZEN[1])
            if mark == "flame":
                flame(ax, ex + 4.8, cy, 2.0, LEARNABLE[1])
            text(ax, ex + (6.4 if mark else 4.0), cy, label, size=SMALL, ha="left")

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, metadata={"Software": None})
    return fig


def text_overlaps(fig):
    """Pairs of text labels whose rendered boxes overlap (empty list = clean)."""
    renderer = fig.canvas.get_renderer()
    texts = [t for ax in fig.axes for t in ax.texts if t.get_text().strip()]
    extents = [t.get_window_extent(renderer) for t in texts]
    clashes = []
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            if extents[i].overlaps(extents[j]):
                clashes.append((texts[i].get_text(), texts[j].get_text()))
    return clashes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--out", default=str(DEFAULT_OUT),
                        help="output PNG (default: framework.png at the repository root)")
    parser.add_argument("--check", action="store_true",
                        help="exit non-zero if any two text labels overlap")
    args = parser.parse_args(argv)
    fig = draw(args.out)
    print(f"wrote {args.out}")
    if args.check:
        clashes = text_overlaps(fig)
        for a, b in clashes:
            print(f"overlap: {a!r} <-> {b!r}")
        if clashes:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
