"""Every user command on one device, at toy size: does this machine (a GPU's first run) run the project?

    python tools/device_check.py                       # on cuda, each command again on the CPU beside it
    python tools/device_check.py --device cpu          # on the CPU alone
    python tools/device_check.py --only lmpt,zero-shot --backbones vit

For each backbone family, ViT and ResNet with attention pooling (tiny CLIPs of random weights, written in
OpenAI's released format), on a generated 'coco-lt' dataset (not timed), it runs the published scripts as a
user does, each in its own process with the scripts' default workers:

- ``lmpt``: ``lmpt/train.py --training_method lmpt`` (2 epochs); ``lmpt/test.py`` on its run; a run of 1
  epoch resumed (``--resume``) to 2;
- ``coop``: ``lmpt/train.py --training_method coop``;
- ``zero-shot``: ``zero_shot_clip/test.py``;
- ``linear-probe`` and ``finetune-full``: ``finetune_clip/fc.py`` without and with ``--from_scratch``, and
  ``lmpt/test.py`` on each run.

Each group has a feature cache of its own, so each script encodes images on the device once (its
``lmpt/test.py`` and the resumed run then read the training run's cache, as a user's do).

A command passes when it exits with 0 within ``--timeout`` seconds and writes its results with finite
metrics. Where a results file must equal another, the largest difference of their metrics
(``report.COLUMNS``) is shown, and must be 0 where the README says so: ``lmpt/test.py`` and the run's
``results.json`` on any device (the same checkpoint and cached features; a full fine-tuning run's test
images are encoded again, which on a GPU the README allows to round otherwise), the resumed run and
the uninterrupted one (``metrics.jsonl`` too) on the CPU (on a GPU their training rounds otherwise: shown,
not judged). A difference in which metrics are null, or in the epochs, fails anywhere. The resumed run must
say it resumed and keep the first run's epoch row as written.
With ``--reference cpu`` (the default for a device other than the CPU) every command runs on the CPU too,
in folders of its own, and the difference of each mAP is shown beside it (shown, not judged: the
precision differs). The table and the report (JSON, ``--out``, written again after every command) name
the device, torch and the commit measured (None where the folder is no git checkout, such as a copy sent
to a GPU machine: name the commit in the report's file name); a failed command's last lines of output are
printed and kept in the report (each command's whole output is a log in the work folder, kept with
``--work_dir``). Exit status 1 when a command failed.
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
from lmpt.checkpoint import read_metrics as read_epoch_rows, save_json  # noqa: E402  (metrics.jsonl's rows)
from lmpt.cli import printable_output, script_parser  # noqa: E402
from lmpt.device import select_device  # noqa: E402
from lmpt.provenance import code_version  # noqa: E402
from lmpt.metrics import GROUPS as GROUPS_BY_SIZE  # noqa: E402
from lmpt.report import COLUMNS  # noqa: E402
from lmpt.settings import is_number  # noqa: E402

# clip.model.CLIP(**kwargs) of the two families: the shapes of tests/tiny_clip.py
TINY_RESNET = {**TINY_VIT, "image_resolution": 64, "vision_layers": (1, 1, 1, 1), "vision_width": 16,
               "vision_patch_size": None}  # a 2 x 2 grid for the attention pool (8 heads of 64)
BACKBONES = {"vit": TINY_VIT, "resnet": TINY_RESNET}
GROUPS = ("lmpt", "coop", "zero-shot", "linear-probe", "finetune-full")
# the data: 'coco-lt' layout, COCO's first classes; 2 x 144 training views fill more than one GPU forward (256)
NUM_CLASSES, N_TRAIN, N_TEST, IMAGE_SIZE = 8, 144, 48, (96, 72)
EPOCHS, BATCH_SIZE = 2, 16
GROUP_METRICS = tuple(f"{group}_mAP" for group in GROUPS_BY_SIZE)  # null where no class is in the group
TAIL_LINES = 15  # of a failed command's output, kept in the report (the last PRINTED_LINES of them printed)
PRINTED_LINES = 6
DEFAULT_TIMEOUT = 300  # seconds a command may take (each takes seconds): a hang is a failure, not the end
RESUMED = "[resume] resuming"  # what lmpt/train.py prints when it resumes (engine.resume_state)


def step(name, argv, results, **checks):
    """A command: its name, argv (the script first) and the results file it writes, with ``checks``:
    ``same_as`` (a results file its metrics must equal: on any device with ``exact_on_gpu``, else on the CPU),
    ``same_epochs_as`` (the two runs' metrics.jsonl, compared likewise) and ``resumes`` (the metrics.jsonl of
    a run it resumes: the rows there before must stay as written)."""
    return {"name": name, "argv": argv, "results": results, **checks}


def steps(group, out, data_root, clip_file, device):
    """The commands of ``group`` on ``device``, in order, writing under ``out``."""
    place = ["--device", device, "--cache_dir", str(out / f"cache_{group}")]
    common = ["--data_root", str(data_root), *place, "--batch_size", str(BATCH_SIZE), "--seed", "0"]
    epochs = ["--epochs", str(EPOCHS)]
    run = out / group

    def train(method, run_dir, *more):
        return ["lmpt/train.py", "--dataset", "coco-lt", "--pretrain_clip", str(clip_file), *common,
                "--training_method", method, "--output_dir", str(run_dir), *more]

    def test(run_dir, exact_on_gpu=True):  # lmpt/test.py on a run: its data root and settings are the run's
        results = out / f"{run_dir.name}_test.json"
        return step(f"{run_dir.name} test", ["lmpt/test.py", "--checkpoint", str(run_dir), *place, "--output",
                                             str(results)], results, same_as=run_dir / "results.json",
                    exact_on_gpu=exact_on_gpu)

    if group == "lmpt":
        resumed = out / "lmpt_resumed"
        return [step(group, train(group, run, *epochs, "--lam", "0.5"), run / "results.json"), test(run),
                step("lmpt 1 epoch", train(group, resumed, "--epochs", "1", "--lam", "0.5"), resumed / "results.json"),
                step("lmpt resumed", ["lmpt/train.py", "--resume", str(resumed), *epochs, *place],
                     resumed / "results.json", same_as=run / "results.json", exact_on_gpu=False,
                     same_epochs_as=(resumed / "metrics.jsonl", run / "metrics.jsonl"),
                     resumes=resumed / "metrics.jsonl")]
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
                test(run, exact_on_gpu=group == "linear-probe")]  # full fine-tuning encodes the images again
    raise ValueError(f"group {group!r}: expected one of {', '.join(GROUPS)}")


def run_command(command, log, timeout=DEFAULT_TIMEOUT):
    """Run one command from the repository root, its output written to ``log`` -> the command's record:
    seconds, exit code, its metrics (``report.COLUMNS``) or why there are none, and the tail of a failure's
    output."""
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        f.write(f"$ python {' '.join(command['argv'])}\n")
        f.flush()
        try:
            code = subprocess.run([sys.executable, *command["argv"]], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=timeout).returncode
        except subprocess.TimeoutExpired:  # the child is killed
            code = None
    record = {"name": command["name"], "command": " ".join(command["argv"]), "log": str(log),
              "seconds": round(time.perf_counter() - t0, 2), "exit_code": code, "metrics": None, "problem": None}
    if code is None:
        record["problem"] = f"timed out after {timeout} s"
    elif code:
        record["problem"] = f"exit code {code}"
    else:
        record["metrics"], record["problem"] = results_metrics(command["results"])
    return record


def output_lines(log):
    """A command's output, as lines (progress bars' carriage returns as line ends)."""
    return Path(log).read_text(encoding="utf-8", errors="replace").replace("\r", "\n").splitlines()


def results_metrics(path):
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
    return is_number(value) and math.isfinite(value)


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


def check_device(work, backbone, groups, device, data_root, clip_file, role="checked", timeout=DEFAULT_TIMEOUT):
    """Run ``groups``' commands on ``device`` (in ``work/<role>/<device>/<backbone>``; ``role``: checked or
    reference) -> their records, each yielded as it ends, with its checks done."""
    out = work / role / device.replace(":", "_") / backbone
    (out / "logs").mkdir(parents=True, exist_ok=True)
    by_results = {}  # results file -> its metrics
    for group in groups:
        for command in steps(group, out, data_root, clip_file, device):
            before = read_epoch_rows(command["resumes"]) if "resumes" in command else None
            log = out / "logs" / f"{command['name'].replace(' ', '_')}.log"
            record = run_command(command, log, timeout)
            record.update(backbone=backbone, device=device, group=group)
            if record["problem"] is None and "same_as" in command:
                compare(record, command, by_results.get(str(command["same_as"])), device)
            if record["problem"] is None and before is not None:
                check_resumed(record, command["resumes"], before, log)
            if record["problem"]:
                record["output_tail"] = output_lines(log)[-TAIL_LINES:]
            by_results[str(command["results"])] = record["metrics"]
            yield record


def compare(record, command, other, device):
    """Add to the ``record`` of a command whose metrics must equal another's (``other``: those of the file
    ``command["same_as"]``, and the runs' epochs where it names ``same_epochs_as``) the largest difference
    (``difference``), whether it is 0 (``equal``) and whether it must be (``judged``: on the CPU, or where
    ``exact_on_gpu``); a difference judged, or one in which metrics are null or in the epochs, is its problem."""
    same_as = command["same_as"]
    record["same_as"] = str(same_as)
    difference = largest_difference(record["metrics"], other)
    if difference is None:  # the other command failed: its record says why
        return
    if "same_epochs_as" in command:
        record["epochs_difference"] = epochs_difference(*command["same_epochs_as"])
        difference = max(difference, record["epochs_difference"])
    record.update(difference=difference, equal=difference == 0,
                  judged=torch.device(device).type == "cpu" or command.get("exact_on_gpu", False))
    if difference == math.inf:
        record["problem"] = f"differs from {same_as} (or its metrics.jsonl) in which metrics are null, or in epochs"
    elif record["judged"] and difference:
        record["problem"] = f"differs from {same_as} (or its metrics.jsonl) by {difference:.3g} on {device}"


def check_resumed(record, metrics_file, before, log):
    """A resumed run must say so and keep the epoch rows of ``metrics_file`` that were there before it
    (``before``, their seconds too): one that trained again from the start would give the same results."""
    if not any(line.startswith(RESUMED) for line in output_lines(log)):
        record["problem"] = f"it did not say it resumed ('{RESUMED} …' is not in its output)"
    elif not before or read_epoch_rows(metrics_file)[:len(before)] != before:
        record["problem"] = f"{metrics_file}: the rows of the epochs before the resume were not kept as written"


def format_record(record, reference=None):
    """A record as one line of the table: backbone, command, device, seconds, ok or why not, mAP, the
    difference from the file it must equal, and the reference's mAP."""
    metrics = record["metrics"]
    cells = [record["backbone"], record["name"], record["device"], f"{record['seconds']:.1f} s",
             "FAILED: " + record["problem"] if record["problem"] else "ok",
             f"{metrics['mAP']:.2f}" if metrics else ""]
    if record.get("difference") is not None:
        same_as = Path(record["same_as"])
        per_epoch = " (and per epoch)" if "epochs_difference" in record else ""
        judged = "" if record["judged"] else f" (shown, not judged, on {record['device']})"
        cells.append(f"max |Δ| vs {same_as.parent.name}/{same_as.name}{per_epoch}: {record['difference']:.3g}{judged}")
    if reference is not None and reference["metrics"] and metrics:
        cells.append(f"mAP on {reference['device']}: {reference['metrics']['mAP']:.2f} "
                     f"(Δ {metrics['mAP'] - reference['metrics']['mAP']:+.2f})")
    return " | ".join(cells)


def device_check(work, device, backbones=tuple(BACKBONES), groups=GROUPS, reference=None, timeout=DEFAULT_TIMEOUT,
                 out=None, command=None):
    """Generate the data and the CLIPs under ``work``, run the commands (each printed as it ends, the report
    written to ``out`` again after each) -> the report (a dict)."""
    t0 = time.perf_counter()
    report = {"command": command, "device": device, "device_name": device_name(device), "torch": torch.__version__,
              "code": code_version(), "reference": reference, "finished": False, "records": [],
              "reference_records": []}
    data_root = make_benchmark_data(work / "data", NUM_CLASSES, N_TRAIN, N_TEST, IMAGE_SIZE).parent
    for backbone in backbones:
        clip_file = write_random_clip(work / "pretrained" / f"tiny-{backbone}.pt", BACKBONES[backbone])
        for role, on in (("checked", device), ("reference", reference)):
            if on is None:
                continue
            for record in check_device(work, backbone, groups, on, data_root, clip_file, role, timeout):
                report["records" if role == "checked" else "reference_records"].append(record)
                print(format_record(record), flush=True)
                for line in record.get("output_tail", [])[-PRINTED_LINES:]:
                    print(f"    {line}", flush=True)
                if out is not None:
                    save_json(out, report)
    report["failed"] = [f"{r['backbone']} {r['name']} on {r['device']}"
                        for r in report["records"] + report["reference_records"] if r["problem"]]
    report.update(finished=True, seconds=round(time.perf_counter() - t0, 1))  # the data's generation included
    if out is not None:
        save_json(out, report)
    return report


def format_report(report):
    """The table: the checked device's commands, each beside the reference's, and the verdict."""
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
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds a command may take before it is stopped and failed (default: {DEFAULT_TIMEOUT})")
    parser.add_argument("--out", default=str(ROOT / "runs" / "device_check.json"),
                        help="the JSON report, written again after every command")
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
    command = "python tools/device_check.py " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        report = device_check(work, device, backbones, groups, reference, args.timeout, args.out, command)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    print("\n" + format_report(report))
    print(f"report: {args.out}")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    printable_output()
    sys.exit(main())
