"""The embedded demo: every method on the synthetic long-tailed benchmark, one table.

Generates the benchmark and pretrains the tiny CLIP when they are not cached, then
runs zero-shot CLIP, the linear probe, CoOp and LMPT through the same scripts users
run (as subprocesses), and writes runs/demo/summary.md, summary.json and
per_class_ap.png (per-class AP against training frequency, methods overlaid).
--methods also offers full fine-tuning (finetune_clip/fc.py --from_scratch), not run by default.

Other flags are passed on to the scripts whose parser has them, and only to those
(--epochs 5 goes to fc.py and train.py, not to zero_shot_clip/test.py); a flag that none of
the methods' scripts has (an abbreviation too), or one the demo sets itself (its dataset and
data, validation list, where each script writes, the CLIP and its folder, seed and methods), is
refused.
"""
import argparse
import importlib
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from lmpt.checkpoint import save_json, save_text  # noqa: E402
from lmpt.cli import int_in, printable_output, script_parser  # noqa: E402
from lmpt.device import select_device  # noqa: E402
from lmpt.metrics import HEAD_MIN, MEDIUM_MIN, class_groups  # noqa: E402
from lmpt.report import COLUMNS, markdown_table, metric_cells  # noqa: E402
from lmpt.pretrain import FAST_CHECKPOINT_NAME, FAST_SETTINGS, ensure_tiny_clip  # noqa: E402
from lmpt.provenance import code_version, cpu_name  # noqa: E402
from lmpt.synthetic import ensure_benchmark  # noqa: E402

DATASET = "synth-lt"
BACKBONE = "tiny"
# The trained methods select epochs on the benchmark's validation split, so the test split stays unseen.
VAL_LIST = Path("data") / "synth" / "synth_lt_val.txt"
# Prompt tuning on the embedded benchmark: CoOp's random class-specific contexts (16), Adam. Adam rather
# than the published SGD: with SGD (lr 0.02) CoOp stalled near chance on one of two reduced tiny CLIPs
# (pretraining seeds 0 and 1), while Adam learned on both and matched or beat SGD on the default one,
# compared on the validation split (README, "The tiny CLIP").
PROMPT_ARGS = ["--epochs", "40", "--batch_size", "32", "--n_ctx", "16", "--optimizer", "adam", "--lr", "0.002"]
METHODS = {
    "zero-shot CLIP": ["zero_shot_clip/test.py", "--pretrain_clip_path", BACKBONE, "--templates", "single"],
    "linear probe": ["finetune_clip/fc.py", "--pretrain_clip_path", BACKBONE, "--epochs", "60", "--lr", "0.001",
                     "--batch_size", "32"],
    # not in DEFAULT_METHODS (--methods asks for it): a starting point, neither tuned nor timed on the benchmark
    "full fine-tuning": ["finetune_clip/fc.py", "--pretrain_clip_path", BACKBONE, "--from_scratch", "--epochs", "10",
                         "--lr", "0.0001", "--batch_size", "32"],
    "CoOp": ["lmpt/train.py", "--training_method", "coop", "--pretrain_clip", BACKBONE, *PROMPT_ARGS],
    "LMPT": ["lmpt/train.py", "--training_method", "lmpt", "--pretrain_clip", BACKBONE, *PROMPT_ARGS],
}
DEFAULT_METHODS = ("zero-shot CLIP", "linear probe", "CoOp", "LMPT")  # the table of README and docs/demo/
# What the demo sets for every method itself, by destination in the scripts' parsers (so every spelling of a flag):
# the dataset and its data, the validation list, where each script writes (the run folder whose results.json the
# demo reads back; zero-shot's --output would send its results elsewhere), the CLIP and the folder it is read from
# (the demo prepared the tiny CLIP there), the seed, and the --from_scratch/--training_method that make a method
# what it is. Passed on, they would contradict its table, its validation list or the dataset it plots.
DEMO_SETS = ("dataset", "data_root", "val_list", "output_dir", "output", "overwrite", "resume", "seed",
             "pretrain_clip", "pretrain_clip_path", "pretrained_dir", "from_scratch", "training_method")


def script_flags(script):
    """{option string: its destination} of a script's parser (``build_parser`` of its module: ``lmpt/train.py`` is
    ``lmpt.train``)."""
    parser = importlib.import_module(script.removesuffix(".py").replace("/", ".")).build_parser()
    return {option: action.dest for action in parser._actions for option in action.option_strings}


def forwarded_flags(extra, scripts, error):
    """{script: the arguments of ``extra`` (demo.py's unknown ones) whose flag its parser has}, for ``scripts``;
    ``error(message)`` for a value without a flag, a flag the demo sets itself (one whose destination is in
    ``DEMO_SETS`` in the parser of any method's script, chosen or not) and a flag that none of the scripts has (an
    abbreviation too, which the scripts would refuse only once the demo had run the methods before them)."""
    groups = []  # [(flag, [the flag and its values])]
    for token in extra:
        if token.startswith("-") and not token[1:2].isdigit() and not token[1:2] == ".":  # -1, -.5: values
            groups.append((token.split("=", 1)[0], [token]))
        elif groups:
            groups[-1][1].append(token)
        else:
            error(f"argument {token!r}: a value without a flag")
    every = dict.fromkeys([*scripts, *(argv[0] for argv in METHODS.values())])  # the methods' scripts, chosen or not
    flags = {script: script_flags(script) for script in every}
    forwarded = {script: [] for script in scripts}
    for flag, tokens in groups:
        if any(options.get(flag) in DEMO_SETS for options in flags.values()):
            error(f"{flag}: set by the demo itself for every method (its dataset and data, validation list, where "
                  f"each script writes, the CLIP and its folder, seed and methods); run the scripts themselves for "
                  f"other values")
        takers = [script for script in scripts if flag in flags[script]]
        if not takers:
            error(f"{flag}: none of the methods' scripts ({', '.join(scripts)}) has this flag")
        for script in takers:
            forwarded[script] += tokens
        if len(takers) < len(scripts):
            others = [s for s in scripts if s not in takers]
            print(f"[demo] {' '.join(tokens)}: passed to {', '.join(takers)} only; {', '.join(others)} "
                  f"{'has' if len(others) == 1 else 'have'} no {flag}")
    return forwarded


def run_method(name, argv, out_dir, seed, extra, backbone=BACKBONE):
    """Run the method ``name`` (its script and flags ``argv``, the forwarded ``extra``) into its folder under
    ``out_dir``; returns the results.json it wrote there, with the seconds it took."""
    run_dir = out_dir / name.replace(" ", "_").lower()
    argv = [backbone if a == BACKBONE else a for a in argv]
    cmd = [sys.executable, argv[0], "--dataset", DATASET, "--seed", str(seed), "--output_dir", str(run_dir),
           *argv[1:], *extra]
    if "fc.py" in argv[0] or "train.py" in argv[0]:  # trained methods: select epochs on val
        cmd += ["--overwrite", "--val_list", str(VAL_LIST)]
    print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True)
    results = json.loads((run_dir / "results.json").read_text())
    results["seconds"] = round(time.time() - t0, 1)
    return results


def table(rows):
    """The demo's markdown table: a row a method ({name: its results.json with the seconds it took})."""
    return markdown_table(["method", *COLUMNS, "seconds"],
                          [[name, *metric_cells(r), f"{r['seconds']:.0f}"] for name, r in rows.items()])


def plot(rows, class_names, train_freq, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    order = np.argsort(-np.asarray(train_freq))
    freq = np.asarray(train_freq)[order]
    fig, ax = plt.subplots(figsize=(11, 4.8), dpi=130)
    x = np.arange(len(order))
    bands = {"head": ("#dbe9f6", f"head (≥{HEAD_MIN})"),
             "medium": ("#fdf1d6", f"medium ({MEDIUM_MIN}–{HEAD_MIN - 1})"),
             "tail": ("#f9dcdc", f"tail (<{MEDIUM_MIN})")}
    for group, members in class_groups(freq).items():  # positions in the sorted order: contiguous
        colour, label = bands[group]
        idx = x[members]
        if len(idx):
            ax.axvspan(idx.min() - 0.5, idx.max() + 0.5, color=colour, zorder=0)
            ax.text(idx.mean(), 101, label, ha="center", va="bottom", fontsize=9)
    for (name, r), marker in zip(rows.items(), "osD^v"):
        ap = np.array([np.nan if v is None else v for v in r["per_class_AP"]])[order]
        ax.plot(x, ap, marker=marker, ms=4, lw=1.2, label=f"{name} (mAP {r['mAP']:.1f})")
    ax.set_xticks(x, [f"{class_names[i]}\n{int(f)}" for i, f in zip(order, freq)], fontsize=7)
    ax.set_xlim(-0.5, len(x) - 0.5)
    ax.set_ylim(0, 108)
    ax.set_ylabel("AP (%)")
    ax.set_xlabel("class (training images), sorted by training frequency")
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("Per-class AP on the embedded synthetic long-tailed benchmark")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def device_used(extra):
    """The device the methods ran on, as the summary records it: the GPU's name, or ``cpu``; the scripts'
    ``--device`` default (CUDA when there is one), or the ``--device`` the demo passed on (``extra``; its last,
    as argparse reads it)."""
    device_flag = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    device_flag.add_argument("--device", default=None)
    device = select_device(device_flag.parse_known_args(extra)[0].device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def main(argv=None):
    p = script_parser(__doc__)
    p.add_argument("--seed", type=int_in(0, 2**32 - 1), default=0, help="every method's --seed")
    p.add_argument("--out_dir", type=Path, default=None,
                   help="folder of the methods' run folders and the summary (default: runs/demo of the repository, "
                        "runs/demo_fast with --fast)")
    p.add_argument("--methods", nargs="*", default=list(DEFAULT_METHODS), choices=list(METHODS),
                   help=f"the methods to run, in this order (default: {', '.join(DEFAULT_METHODS)})")
    p.add_argument("--fast", action="store_true",
                   help=f"the tests' reduced tiny CLIP (FAST_SETTINGS, cached as pretrained/{FAST_CHECKPOINT_NAME})")
    args, extra = p.parse_known_args(argv)
    forwarded = forwarded_flags(extra, list(dict.fromkeys(METHODS[name][0] for name in args.methods)), p.error)
    # absolute: the scripts run from the repository root, the table is read and written from here
    out_dir = (args.out_dir or ROOT / "runs" / ("demo_fast" if args.fast else "demo")).resolve()
    t0 = time.time()
    ensure_benchmark(ROOT / "data")
    if args.fast:
        backbone = str(ensure_tiny_clip(name=FAST_CHECKPOINT_NAME, **FAST_SETTINGS))
    else:
        ensure_tiny_clip()
        backbone = BACKBONE
    print(f"[demo] benchmark and tiny CLIP ready after {time.time() - t0:.0f}s", flush=True)
    rows = {name: run_method(name, METHODS[name], out_dir, args.seed, forwarded[METHODS[name][0]], backbone)
            for name in args.methods}

    from lmpt.data import load_dataset
    dataset = load_dataset(DATASET, ROOT / "data")
    train_freq = [int(v) for v in dataset.train_freq]
    text = table(rows)
    elapsed = time.time() - t0
    save_text(out_dir / "summary.md", text + f"\n\nTotal demo time: {elapsed:.0f} s\n")
    save_json(out_dir / "summary.json", {"rows": rows, "class_names": dataset.class_names,
                                         "train_class_freq": train_freq, "seconds": elapsed,
                                         "code": code_version(), "machine": cpu_name(),
                                         "device": device_used(extra), "torch": torch.__version__})
    plot(rows, dataset.class_names, train_freq, out_dir / "per_class_ap.png")
    print("\n" + text)
    print(f"\n[demo] total {elapsed:.0f}s; table, json and plot in {out_dir}")


if __name__ == "__main__":
    printable_output()
    main()
