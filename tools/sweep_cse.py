"""Sweep the class-specific embedding loss on the embedded benchmark.

Grid: --cse_margin × --cse_gamma (LMPT, lam 0.5), then --lam at the best pair, and
CoOp (no caption loss) as the reference, each over several seeds. Epochs and the
defaults are selected on the benchmark's validation split (synth_lt_val.txt), never on
the test split; test metrics are reported as mean ± std over seeds.
Writes sweep.json and SWEEP.md (the tables) in --out_dir (runs/sweep/); the committed
docs/SWEEP.md is written only when --doc names it (it was printed when that file was the default).

    python tools/sweep_cse.py --doc docs/SWEEP.md   # the full sweep (3 seeds), as docs/SWEEP.md holds it
    python tools/sweep_cse.py --seeds 0 --margins 0.5 --gammas 1 --lams 0.5   # a quick look: runs/sweep/SWEEP.md
"""
import contextlib
import io
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lmpt import train as train_script  # noqa: E402
from lmpt.checkpoint import save_json, save_text  # noqa: E402
from lmpt.cli import printable_output, script_parser  # noqa: E402
from lmpt.fileid import file_fingerprint  # noqa: E402
from lmpt.pretrain import ensure_tiny_clip  # noqa: E402
from lmpt.report import markdown_table, mean_std, mean_std_cell  # noqa: E402
from lmpt.synthetic import STAMP_NAME, ensure_benchmark  # noqa: E402

sys.path.insert(0, str(ROOT / "tools"))
from demo import DATASET, PROMPT_ARGS, VAL_LIST  # noqa: E402

DEFAULT_LAM = train_script.build_parser().get_default("lam")  # the published 0.5: the grid's λ
SWEEP_STAMP = "sweep_stamp.json"  # beside results.json: what a finished run was trained with (reused when the same)
METRICS = ("val_mAP", "mAP", "head_mAP", "medium_mAP", "tail_mAP", "CF1", "OF1")


def shown(path):
    """A folder or file as the write-up names it: relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run_name(method, margin=None, gamma=None, lam=None):
    """A configuration's name, its runs' folder under --out_dir: ``coop``, or ``lmpt_m<Δ>_g<γ>_l<λ>``."""
    return method if method == "coop" else f"lmpt_m{margin}_g{gamma}_l{lam}"


def inputs_stamp():
    """What the runs are trained on besides their command line: the tiny CLIP's bytes and the benchmark's
    generator stamp (a pretrained-again CLIP or a regenerated benchmark trains every run again)."""
    benchmark = ensure_benchmark(ROOT / "data")
    # the file --pretrain_clip tiny reads: in $LMPT_PRETRAINED_DIR when set, else in the repository's pretrained/
    return {"tiny_clip_sha256": file_fingerprint(ensure_tiny_clip()),
            "benchmark": json.loads((benchmark / STAMP_NAME).read_text())}


def run(out_dir, seed, inputs, method, margin=None, gamma=None, lam=None):
    """Train one configuration (unless its run folder holds results of the same command line and ``inputs``);
    returns (name, results, trained)."""
    name = run_name(method, margin, gamma, lam)
    run_dir = (Path(out_dir) / name / f"seed{seed}").resolve()  # one spelling of the folder in the stamp
    argv = ["--dataset", DATASET, "--pretrain_clip", "tiny", "--seed", str(seed), "--training_method", method,
            "--output_dir", str(run_dir), "--overwrite",
            "--num_workers", "0", "--val_list", str(ROOT / VAL_LIST), *PROMPT_ARGS]  # from any folder
    if method == "lmpt":
        argv += ["--cse_margin", str(margin), "--cse_gamma", str(gamma), "--lam", str(lam)]
    stamp, wanted = run_dir / SWEEP_STAMP, {"argv": argv, **inputs}
    trained = not ((run_dir / "results.json").exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted)
    if trained:  # new, unfinished, or trained with other settings (the demo's PROMPT_ARGS, another tiny CLIP)
        stamp.unlink(missing_ok=True)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            train_script.main(argv)
        save_json(stamp, wanted)
    results = json.loads((run_dir / "results.json").read_text())
    if results["selection_split"] != "val":
        raise RuntimeError(f"{run_dir}: selected on {results['selection_split']!r}, expected 'val'")
    results["val_mAP"] = results["selection_mAP"]
    return name, results, trained


def verdict(best, coop, n_seeds, setting="best setting", default=None):
    """Whether the caption loss helps tail classes: the difference against twice its standard error.
    ``setting`` names the best configuration; ``default``: the summary at the default λ, quoted beside it."""
    diff = best["tail_mAP"][0] - coop["tail_mAP"][0]
    stderr = ((best["tail_mAP"][1] ** 2 + coop["tail_mAP"][1] ** 2) / n_seeds) ** 0.5
    if n_seeds > 1 and abs(diff) <= 2 * stderr:
        claim = "shows no clear effect on tail classes (the difference is within twice its standard error)"
    else:
        claim = "helps tail classes" if diff > 0 else "hurts tail classes"
    at_default = ""
    if default is not None and default is not best:
        at_default = (f" At the default --lam {DEFAULT_LAM:g}, LMPT's tail mAP is {default['tail_mAP'][0]:.2f} ± "
                      f"{default['tail_mAP'][1]:.2f}, {default['tail_mAP'][0] - coop['tail_mAP'][0]:+.2f} against "
                      f"CoOp.")
    return (f"On this benchmark the caption loss {claim}: tail mAP {best['tail_mAP'][0]:.2f} ± "
            f"{best['tail_mAP'][1]:.2f} (LMPT, {setting}) vs {coop['tail_mAP'][0]:.2f} ± "
            f"{coop['tail_mAP'][1]:.2f} (CoOp), a difference of {diff:+.2f} ± {stderr:.2f} (standard error) "
            f"points over {n_seeds} seeds (total mAP {best['mAP'][0]:.2f} vs {coop['mAP'][0]:.2f}).{at_default}")


def summarise(rows):
    """{config: {metric: (mean, std)}} over seeds."""
    return {name: {m: mean_std([r[m] for r in runs]) for m in METRICS} for name, runs in rows.items()}


def table(summary, order):
    """The markdown table of the configurations ``order`` (names in ``summary``): mean ± std of each of ``METRICS``."""
    return markdown_table(["configuration", *METRICS],
                          [[name, *(mean_std_cell(*summary[name][m]) for m in METRICS)]
                           for name in order])


def build_parser():
    """The command line: the grid (seeds, Δ, γ, λ) and where the runs and the write-up go."""
    p = script_parser(__doc__)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the seeds of every configuration")
    p.add_argument("--margins", type=float, nargs="+", default=[0.2, 0.5, 1.0], help="the grid's --cse_margin (Δ)")
    p.add_argument("--gammas", type=float, nargs="+", default=[0.5, 1.0, 2.0], help="the grid's --cse_gamma (γ)")
    p.add_argument("--lams", type=float, nargs="+", default=[0.25, 0.5, 0.75],
                   help="the --lam tried at the grid's best Δ, γ")
    p.add_argument("--out_dir", type=Path, default=ROOT / "runs" / "sweep",
                   help="the runs and sweep.json (default: runs/sweep of the repository)")
    p.add_argument("--doc", type=Path, default=None,
                   help="the write-up (default: SWEEP.md in --out_dir; the committed one is docs/SWEEP.md)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.doc is None:  # a quick look never replaces the committed docs/SWEEP.md
        args.doc = args.out_dir / "SWEEP.md"
    inputs = inputs_stamp()  # generates the benchmark and pretrains the tiny CLIP first where needed
    t0 = time.time()
    rows, configs, counts = {}, {}, {"trained": 0, "reused": 0}

    def collect(*config):
        if run_name(*config) in rows:  # collected already (lam 0.5 is on the grid): each seed counts once
            return run_name(*config)
        for seed in args.seeds:
            name, results, trained = run(args.out_dir, seed, inputs, *config)
            counts["trained" if trained else "reused"] += 1
            rows.setdefault(name, []).append(results)
            configs[name] = config
            print(f"{name} seed {seed}: val mAP {results['val_mAP']:.2f} test mAP {results['mAP']:.2f} "
                  f"tail {results['tail_mAP']:.2f}  ({time.time() - t0:.0f}s)", flush=True)
        return name

    coop = collect("coop")
    grid = [collect("lmpt", m, g, DEFAULT_LAM) for m in args.margins for g in args.gammas]
    summary = summarise(rows)
    best = max(grid, key=lambda n: summary[n]["val_mAP"][0])
    _, best_margin, best_gamma, _ = configs[best]
    lam_runs = [collect("lmpt", best_margin, best_gamma, lam) for lam in args.lams]
    summary = summarise(rows)
    best_lam_run = max(lam_runs, key=lambda n: summary[n]["val_mAP"][0])
    best_lam = configs[best_lam_run][3]

    save_json(args.out_dir / "sweep.json", {"seeds": args.seeds, "summary": summary,
                                             "best": {"cse_margin": best_margin, "cse_gamma": best_gamma,
                                                      "lam": best_lam}})
    s_coop, s_best = summary[coop], summary[best_lam_run]
    default_run = run_name("lmpt", best_margin, best_gamma, DEFAULT_LAM)
    conclusion = verdict(s_best, s_coop, len(args.seeds),
                         f"best setting: Δ {best_margin:g}, γ {best_gamma:g}, λ {best_lam:g}",
                         summary.get(default_run))
    doc = [
        "# Sweep of the class-specific embedding loss (embedded benchmark)",
        "",
        f"Printed by `python tools/sweep_cse.py --doc {shown(args.doc)}` (seeds {args.seeds}; this invocation "
        f"trained {counts['trained']} runs in {time.time() - t0:.0f} s and reused {counts['reused']} finished ones "
        f"from `{shown(args.out_dir)}/`). "
        "Tiny CLIP, synthetic long-tailed benchmark, the demo's prompt-tuning settings "
        f"(`{' '.join(PROMPT_ARGS)}`). Epochs and settings are selected on the validation split "
        "(`val_mAP`, the best epoch's); every other metric is on the test split; mean ± std over seeds, in percent.",
        "",
        "## Margin Δ × class-weight exponent γ (lam 0.5), and CoOp",
        "",
        table(summary, [coop, *grid]),
        "",
        f"Best by validation mAP: `--cse_margin {best_margin} --cse_gamma {best_gamma}`.",
        "",
        "## lam at the best Δ, γ",
        "",
        table(summary, [coop, *lam_runs]),
        "",
        f"Best by validation mAP: `--lam {best_lam}`.",
        "",
        "## Verdict",
        "",
        conclusion,
        "",
    ]
    save_text(args.doc, "\n".join(doc))
    print("\n".join(doc))


if __name__ == "__main__":
    printable_output()
    main()
