"""Every user command on one device, at toy size: does this machine (a GPU's first run) run the project?

    python tools/device_check.py                       # on cuda, each command again on the CPU beside it
    python tools/device_check.py --device cpu          # on the CPU alone
    python tools/device_check.py --only lmpt,zero-shot --backbones vit

For each backbone family, ViT and ResNet with attention pooling (tiny CLIPs of random weights, written in
OpenAI's released format), on a generated 'coco-lt' dataset (not timed), it runs the published scripts as a
user does, each in its own process:

- ``lmpt``: ``lmpt/train.py --training_method lmpt`` (2 epochs); ``lmpt/test.py`` on its run; a run of 1
  epoch resumed (``--resume``) to 2, whose results must equal the uninterrupted run's;
- ``coop``: ``lmpt/train.py --training_method coop``;
- ``zero-shot``: ``zero_shot_clip/test.py``;
- ``linear-probe`` and ``finetune-full``: ``finetune_clip/fc.py`` without and with ``--from_scratch``, and
  ``lmpt/test.py`` on each run.

A command passes when it exits with 0 and writes its results with finite metrics. Where a results file
must equal another (``lmpt/test.py`` and the run's ``results.json``; the resumed run and the uninterrupted
one, in their ``metrics.jsonl`` too) the largest difference of their metrics (``report.COLUMNS``) is
shown: on the CPU it must be 0 (the README says so), on a GPU it is shown, not judged (bf16 autocast and
CUDA's kernels round otherwise).
With ``--reference cpu`` (the default for a device other than the CPU) every command runs on the CPU too and
the difference of each mAP is shown beside it (shown, not judged: the precision differs). The table and
the report (JSON, ``--out``) name the device, torch and the commit measured; a failed command's last
lines of output are in both. Exit status 1 when a command failed.
"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT, ROOT / "tools"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import torch  # noqa: E402

from benchmark_speed import TINY_VIT, device_name, make_benchmark_data, write_random_clip  # noqa: E402
from lmpt.checkpoint import read_metrics as read_epoch_rows, save_json  # noqa: E402
from lmpt.cli import script_parser  # noqa: E402
from lmpt.device import select_device  # noqa: E402
from lmpt.provenance import code_version  # noqa: E402
from lmpt.metrics import GROUPS as GROUPS_BY_SIZE  # noqa: E402
from lmpt.report import COLUMNS  # noqa: E402

# clip.model.CLIP(**kwargs) of the two families: the shapes of tests/tiny_clip.py
TINY_RESNET = {**TINY_VIT, "image_resolution": 64, "vision_layers": (1, 1, 1, 1), "vision_width": 16,
               "vision_patch_size": None}  # a 2 x 2 grid for the attention pool (8 heads of 64)
BACKBONES = {"vit": TINY_VIT, "resnet": TINY_RESNET}
GROUPS = ("lmpt", "coop", "zero-shot", "linear-probe", "finetune-full")
NUM_CLASSES, N_TRAIN, N_TEST, IMAGE_SIZE = 8, 48, 32, (96, 72)  # the data: 'coco-lt' layout, COCO's first classes
EPOCHS, BATCH_SIZE = 2, 16
GROUP_METRICS = tuple(f"{group}_mAP" for group in GROUPS_BY_SIZE)  # null where no class is in the group
TAIL_LINES = 15  # of a failed command's output, kept in the report


def step(name, argv, results, **compare):
    """A command: its name, argv (the script first), the results file it writes and, where its metrics must
    equal another's, that file (``same_as``) and the two runs' ``metrics.jsonl`` (``same_epochs_as``)."""
    return {"name": name, "argv": argv, "results": results, **compare}


def steps(group, out, data_root, clip_file, device, cache_dir):
    """The commands of ``group`` on ``device``, in order, writing under ``out``."""
    place = ["--device", device, "--cache_dir", str(cache_dir), "--num_workers", "2"]
    common = ["--data_root", str(data_root), *place, "--batch_size", str(BATCH_SIZE), "--seed", "0"]
    epochs = ["--epochs", str(EPOCHS)]
    run = out / group

    def train(method, run_dir, *more):
        return ["lmpt/train.py", "--dataset", "coco-lt", "--pretrain_clip", str(clip_file), *common,
                "--training_method", method, "--output_dir", str(run_dir), *more]

    def test(run_dir):  # lmpt/test.py on a run: its data root and settings are the run's
        results = out / f"{run_dir.name}_test.json"
        return step(f"{run_dir.name} test", ["lmpt/test.py", "--checkpoint", str(run_dir), *place, "--output",
                                             str(results)], results, same_as=run_dir / "results.json")

    if group == "lmpt":
        resumed = out / "lmpt_resumed"
        return [step(group, train(group, run, *epochs, "--lam", "0.5"), run / "results.json"), test(run),
                step("lmpt 1 epoch", train(group, resumed, "--epochs", "1", "--lam", "0.5"), resumed / "results.json"),
                step("lmpt resumed", ["lmpt/train.py", "--resume", str(resumed), *epochs, *place],
                     resumed / "results.json", same_as=run / "results.json",
                     same_epochs_as=(resumed / "metrics.jsonl", run / "metrics.jsonl"))]
    if group == "coop":
        return [step(group, train(group, run, *epochs), run / "results.json")]
    if group == "zero-shot":
        return [step(group, ["zero_shot_clip/test.py", "--dataset", "coco-lt", "--nb_classes", str(NUM_CLASSES),
                             "--pretrain_clip_path", str(clip_file), *common, "--output_dir", str(run)],
                     run / "results.json")]
    if group in ("linear-probe", "finetune-full"):
        scratch = ["--from_scratch"] if group == "finetune-full" else []
        return [step(group, ["finetune_clip/fc.py", "--dataset", "coco-lt", "--nb_classes", str(NUM_CLASSES),
                             "--pretrain_clip_path", str(clip_file), *common, *epochs, *scratch, "--output_dir",
                             str(run)], run / "results.json"),
                test(run)]
    raise ValueError(f"group {group!r}: expected one of {', '.join(GROUPS)}")


def run_step(step, log):
    """Run one command from the repository root, its output appended to ``log`` -> the step's record: seconds,
    exit code, its metrics (``report.COLUMNS``) or why there are none, and the tail of a failure's output."""
    t0 = time.perf_counter()
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"\n$ python {' '.join(step['argv'])}\n")
        f.flush()
        done = subprocess.run([sys.executable, *step["argv"]], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    record = {"name": step["name"], "command": " ".join(step["argv"]), "seconds": round(time.perf_counter() - t0, 2),
              "exit_code": done.returncode, "metrics": None, "problem": None}
    if done.returncode:
        record["problem"] = f"exit code {done.returncode}"
    else:
        record["metrics"], record["problem"] = read_metrics(step["results"])
    if record["problem"]:
        lines = Path(log).read_text(encoding="utf-8", errors="replace").replace("\r", "\n").splitlines()
        record["output_tail"] = lines[-TAIL_LINES:]
    return record


def read_metrics(path):
    """(the metrics of a results file, None) or (None, what is wrong with it). A head, medium or tail mAP
    may be null (no class in the group: the toy data has no head class); every other metric must be finite."""
    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return None, f"{path}: {e}"
    metrics = {key: results.get(key) for key in COLUMNS}
    bad = [key for key, value in metrics.items()
           if not (value is None and key in GROUP_METRICS and key in results) and not _finite(value)]
    return (None, f"{path}: {', '.join(bad)} missing or not finite") if bad else (metrics, None)


def _finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def largest_difference(metrics, other):
    """The largest |difference| of two files' metrics (inf where a group's mAP is null in one file only),
    or None where either file has none."""
    if metrics is None or other is None:
        return None
    if any((metrics[key] is None) != (other[key] is None) for key in COLUMNS):
        return math.inf
    return max(abs(metrics[key] - other[key]) for key in COLUMNS if metrics[key] is not None)


def epochs_difference(path, other):
    """The largest |difference| of two runs' per-epoch metrics (``metrics.jsonl``: losses, mAPs, lr; not the
    seconds); inf where they differ in epochs or keys."""
    rows, other_rows = read_epoch_rows(path), read_epoch_rows(other)
    if len(rows) != len(other_rows) or any(a.keys() != b.keys() for a, b in zip(rows, other_rows)):
        return math.inf
    return max((math.inf if a[key] is None or b[key] is None else abs(a[key] - b[key])
                for a, b in zip(rows, other_rows) for key in a
                if key != "seconds" and (a[key], b[key]) != (None, None)), default=0)


def check_device(work, backbone, groups, device, data_root, clip_file, role="checked"):
    """The records of ``groups``' commands on ``device`` (in ``work/<role>/<device>/<backbone>``; ``role``:
    checked or reference), each printed as it ends."""
    out = work / role / device.replace(":", "_") / backbone
    out.mkdir(parents=True, exist_ok=True)
    records, by_results = [], {}  # results file -> its metrics
    for group in groups:
        for command in steps(group, out, data_root, clip_file, device, out.parent / "cache"):
            record = run_step(command, out / "commands.log")
            record.update(backbone=backbone, device=device, group=group)
            if "same_as" in command:
                compare(record, command, by_results.get(str(command["same_as"])), device)
            by_results[str(command["results"])] = record["metrics"]
            records.append(record)
            print(format_record(record), flush=True)
    return records


def compare(record, command, other, device):
    """Add to the ``record`` of a command whose metrics must equal another's (``other``, those of the file
    ``command["same_as"]``, and the runs' epochs where it names ``same_epochs_as``) the largest difference
    (``difference``) and, on the CPU, ``equal``; a difference on the CPU is the record's problem."""
    record["same_as"] = str(command["same_as"])
    record["difference"] = largest_difference(record["metrics"], other)
    if "same_epochs_as" in command and record["difference"] is not None:
        record["epochs_difference"] = epochs_difference(*command["same_epochs_as"])
        record["difference"] = max(record["difference"], record["epochs_difference"])
    if torch.device(device).type == "cpu" and record["difference"] is not None:
        record["equal"] = record["difference"] == 0
        if not record["equal"]:
            record["problem"] = (f"differs from {command['same_as']} (or its metrics.jsonl) by "
                                 f"{record['difference']:.3g} on the CPU")


def format_record(record, reference=None):
    metrics = record["metrics"]
    cells = [record["backbone"], record["name"], record["device"], f"{record['seconds']:.1f} s",
             "FAILED: " + record["problem"] if record["problem"] else "ok",
             f"{metrics['mAP']:.2f}" if metrics else ""]
    if record.get("difference") is not None:
        per_epoch = " (and per epoch)" if "epochs_difference" in record else ""
        cells.append(f"max |Δ| vs {Path(record['same_as']).parent.name}/{Path(record['same_as']).name}{per_epoch}: "
                     f"{record['difference']:.3g}")
    if reference is not None and reference["metrics"] and metrics:
        cells.append(f"mAP on {reference['device']}: {reference['metrics']['mAP']:.2f} "
                     f"(Δ {metrics['mAP'] - reference['metrics']['mAP']:+.2f})")
    return " | ".join(cells)


def device_check(work, device, backbones=tuple(BACKBONES), groups=GROUPS, reference=None):
    """Generate the data and the CLIPs under ``work``, run the commands -> the report (a dict)."""
    t0 = time.perf_counter()
    data_root = make_benchmark_data(work / "data", NUM_CLASSES, N_TRAIN, N_TEST, IMAGE_SIZE).parent
    report = {"device": device, "device_name": device_name(device), "torch": torch.__version__,
              "code": code_version(), "reference": reference, "records": [], "reference_records": []}
    for backbone in backbones:
        clip_file = write_random_clip(work / "pretrained" / f"tiny-{backbone}.pt", BACKBONES[backbone])
        report["records"] += check_device(work, backbone, groups, device, data_root, clip_file)
        if reference is not None:
            report["reference_records"] += check_device(work, backbone, groups, reference, data_root, clip_file,
                                                        "reference")
    report["failed"] = [f"{r['backbone']} {r['name']} on {r['device']}"
                        for r in report["records"] + report["reference_records"] if r["problem"]]
    report["seconds"] = round(time.perf_counter() - t0, 1)  # the whole check, the data's generation included
    return report


def format_report(report):
    references = {(r["backbone"], r["name"]): r for r in report["reference_records"]}
    code = report["code"] or {}
    lines = [f"device check on {report['device']} ({report['device_name']}), torch {report['torch']}, "
             f"code {code.get('commit')}{' (modified)' if code.get('modified') else ''}", ""]
    lines += [format_record(r, references.get((r["backbone"], r["name"]))) for r in report["records"]]
    count = len(report["records"]) + len(report["reference_records"])
    lines += ["", (f"FAILED ({len(report['failed'])} of {count} commands): " + "; ".join(report["failed"])
                   if report["failed"] else f"all {count} commands passed") + f" in {report['seconds']:.1f} s"]
    return "\n".join(lines)


def build_parser():
    parser = script_parser(__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="the device checked: cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--reference", default=None,
                        help="a device each command also runs on, for comparison: cpu, or none (default: cpu when "
                             "--device is another device, else none)")
    parser.add_argument("--backbones", default=",".join(BACKBONES),
                        help=f"comma-separated, of {', '.join(BACKBONES)} (default: all)")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated, of {', '.join(GROUPS)} "
                                                                 "(default: all)")
    parser.add_argument("--work_dir", default=None, help="keep the data, the runs and the logs here (default: a "
                                                         "temporary folder, removed after)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "device_check.json"), help="the JSON report")
    return parser


def _choices(text, allowed, flag):
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in allowed]
    if unknown or not chosen:
        raise SystemExit(f"{flag} {text!r}: expected a comma-separated list of {', '.join(allowed)}")
    return tuple(chosen)


def _device(name, flag):
    """``select_device(name)`` as a string; its refusal names ``flag``."""
    try:
        return str(select_device(name))
    except ValueError as e:
        raise SystemExit(str(e).replace("--device", flag, 1)) from None


def main(argv=None):
    args = build_parser().parse_args(argv)
    backbones = _choices(args.backbones, tuple(BACKBONES), "--backbones")
    groups = _choices(args.only, GROUPS, "--only")
    device = _device(args.device, "--device")
    reference = args.reference or ("none" if torch.device(device).type == "cpu" else "cpu")
    reference = None if reference == "none" else _device(reference, "--reference")
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="device_check_"))
    if args.work_dir and work.exists() and any(work.iterdir()):
        raise SystemExit(f"--work_dir {work}: not empty (the check writes its data and runs there)")
    try:
        report = device_check(work, device, backbones, groups, reference)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    report["command"] = "python tools/device_check.py " + " ".join(argv if argv is not None else sys.argv[1:])
    save_json(args.out, report)
    print("\n" + format_report(report))
    print(f"report: {args.out}")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
