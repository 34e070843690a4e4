"""Put the results of runs side by side in one table, and check that their figures can be compared.

    python tools/compare_runs.py runs/voc-lt_zero-shot_ViT16_seed0 runs/voc-lt_linear-probe_ViT16_seed0 \\
        runs/voc-lt_coop_ViT16_seed0 runs/voc-lt_lmpt_ViT16_seed0
    python tools/compare_runs.py runs/*_seed0 --test_results --output runs/table.md   # or .csv, .json

Each argument is a run folder (its results.json; with --test_results, its test_results.json where it
has one) or a results file: a results.json, a test_results.json, or a file of lmpt/test.py --output.
The table has the columns of tools/demo.py's (mAP, head/medium/tail mAP, CF1, OF1) with each row's
method, CLIP and epoch. Below it, what differs between the rows among what decides whether their
figures compare: the dataset and data root, the number of images scored, the threshold and score of
CF1/OF1, the preprocessing, the CLIP file (sha256), the head/medium/tail bounds, the classes and their
training frequencies. A key that some rows' files do not record (files of earlier versions) is said
too; for a file in a run folder, dataset, data_root and the selection split are then read from the
run's args.json; a key that no row records is said in one line. A row whose epoch was selected on the
test split is marked: its test figures are optimistic. --output also writes the comparison (never over
a run's own files, nor over one of the files compared); --strict exits with status 1 when the rows differ.
--per_class adds a table of each class's AP in every row (most training images first, with each class's
group), and the difference of two rows. --over_seeds adds the mean ± std (n − 1) of each metric over the rows
that differ in their seed alone (by their files and their runs' args.json), a seed counted once.
"""
import csv
import io
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lmpt.checkpoint import check_results_file, check_writable_dir, read_saved_json, save_json, save_text  # noqa: E402
from lmpt.cli import printable_output, script_parser  # noqa: E402
from lmpt.data import dataset_name  # noqa: E402
from lmpt.paths import absolute  # noqa: E402
from lmpt.metrics import classes_by_frequency  # noqa: E402
from lmpt.prepare import selection_split_name  # noqa: E402
from lmpt.report import COLUMNS, markdown_table, mean_std, mean_std_cell, metric_cell, metric_cells  # noqa: E402
from lmpt.losses import CSE_LOSS_FLAGS, DB_LOSS_FLAGS, db_flags_read  # noqa: E402
from lmpt.methods import ZERO_SHOT  # noqa: E402
from lmpt.models import context_words, prompt_texts  # noqa: E402
from lmpt.settings import METHOD_ONLY_FLAGS, RUN_SETTINGS, is_int, is_number  # noqa: E402

# what the rows must share for their figures to compare (the keys every results file records; dataset,
# data_root, class_names and train_class_freq: not in the results.json of earlier versions)
CHECKED = ("dataset", "data_root", "images", "thre", "score", "preprocess", "backbone_sha256", "group_bounds",
           "class_names", "train_class_freq")
HEADER = ("run", "method", "CLIP", "epoch")
TEST_SELECTED = "(on test)"  # the epoch cell's mark of a row whose epoch was selected on the test split
FORMATS = (".md", ".csv", ".json")
# what a trained run is, of its args.json, beside its results file's method, CLIP, checkpoint and CHECKED keys: the
# settings it trained with (a resume compares them) but the seed, its epochs and the DB loss's μ and λ. Where it
# reads, computes or writes, its dataset's spelling and the checks of its inputs are not (--over_seeds).
CONFIGURATION = (*(key for key in RUN_SETTINGS if key != "seed"), "epochs", "gamma", "neg_scale")


def results_file(path, test_results=False):
    """The results file an argument names: a file as it is; a run folder's results.json (with ``test_results``,
    its test_results.json where it has one). Refuses a path that holds neither."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder; expected a run folder or a results file")
    if path.is_file():
        return path
    if test_results and (path / "test_results.json").is_file():
        return path / "test_results.json"
    if (path / "results.json").is_file():
        return path / "results.json"
    tested = " (it has a test_results.json: pass --test_results, or the file)" if (
        path / "test_results.json").is_file() else ""
    raise FileNotFoundError(f"{path}: no results.json here{tested}; expected the folder of a finished run")


def read_row(path, test_results=False):
    """One row: {"run": its label (the name of the file's folder, and the file's own name unless it is a
    results.json), "file", "results": the file's object, "from_args": the keys read from the run's args.json
    because the file lacks them, "args": the args.json of the run (of the folder of the checkpoint the file
    evaluated where it records one and that folder has one, else the file's folder's; {} if none)}. A results
    file of an earlier version that lacks dataset or data_root (or, for a trained run, selection_split) takes them
    from the args.json beside it, if any."""
    file = results_file(path, test_results)
    try:
        results = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{file}: cannot be read as JSON ({error}); expected a results file of the scripts")
    if not isinstance(results, dict) or "mAP" not in results:
        raise ValueError(f"{file}: no mAP; expected a results file (results.json, test_results.json or an "
                         f"lmpt/test.py --output file)")
    aps = results.get("per_class_AP") if isinstance(results.get("per_class_AP"), list) else []
    for key, value in [*((key, results.get(key)) for key in COLUMNS), *(("per_class_AP", ap) for ap in aps)]:
        if value is not None and not is_number(value):
            raise ValueError(f"{file}: {key} {value!r} is not a number; expected each metric a number or null, "
                             f"as the scripts write them")
    from_args = []
    saved = read_saved_json(file.parent / "args.json") or {}
    for key in ("dataset", "data_root"):
        if key not in results and isinstance(saved.get(key), str):
            results[key] = dataset_name(saved[key]) if key == "dataset" else saved[key]
            from_args.append(key)
    if "selection_split" not in results and "checkpoint" in results and "val_list" in saved:
        results["selection_split"] = selection_split_name(saved["val_list"])
        from_args.append("selection_split")
    folder = absolute(file).parent.name  # absolute: a file given as results.json or ./results.json too
    run = folder if file.name == "results.json" else f"{folder}/{file.name}"
    checkpoint = results.get("checkpoint")  # an evaluation's run: the folder of the checkpoint it evaluated
    of_run = read_saved_json(Path(checkpoint).parent / "args.json") if isinstance(checkpoint, str) else None
    return {"run": run, "file": str(file), "results": results, "from_args": from_args,
            "args": saved if of_run is None else of_run}


def epoch_of(results):
    """The epoch of the checkpoint a results file evaluated (None for zero-shot, which trains nothing)."""
    return results.get("checkpoint_epoch", results.get("selected_epoch"))


def selection_unknown(results):
    """Whether the file names a run that selected on the test split but not the epoch it selected (a
    test_results.json of an earlier version) and evaluated another checkpoint than best.pt (last.pt, say), whose
    epoch may or may not be the selected one."""
    return (results.get("selection_split") == "test" and results.get("selected_epoch") is None
            and Path(str(results.get("checkpoint", ""))).name != "best.pt")


def selected_on_test(results):
    """Whether the epoch evaluated is known to be the one its run selected on the test split (the published default,
    without --val_list): then its test figures are optimistic. Where the file does not record the selected epoch,
    only a best.pt's is known to be it (``selection_unknown``)."""
    if results.get("selection_split") != "test" or selection_unknown(results):
        return False
    epoch, selected = results.get("checkpoint_epoch"), results.get("selected_epoch")
    return epoch is None or selected is None or epoch == selected


def method_cell(results):
    """The method column: the method, with zero-shot's templates (``zero-shot (single)``); ``?`` if not recorded."""
    method = str(results.get("method", "?"))
    return f"{method} ({results['templates']})" if results.get("templates") else method


def epoch_cell(results):
    """The epoch column: the checkpoint's epoch (``-`` for zero-shot), marked ``TEST_SELECTED`` where the run
    selected it on the test split."""
    epoch = epoch_of(results)
    cell = "-" if epoch is None else str(epoch)
    return f"{cell} {TEST_SELECTED}" if selected_on_test(results) else cell


def cells(row):
    """A row of the markdown table, as text: run, method, CLIP, epoch and the metrics of ``COLUMNS``."""
    r = row["results"]
    return [row["run"], method_cell(r), str(r.get("backbone", "?")), epoch_cell(r), *metric_cells(r)]


def shown(key, value):
    """A value of a checked key, short enough for a line."""
    if key == "backbone_sha256" and isinstance(value, str):
        return value[:12]
    if isinstance(value, list):
        head = ", ".join(str(v) for v in value[:3])
        return f"[{len(value)}: {head}{', …' if len(value) > 3 else ''}]"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def row_numbers(numbers):
    """``row 2`` or ``rows 1, 3``: rows named by their numbers (from 1)."""
    return ("row " if len(numbers) == 1 else "rows ") + ", ".join(str(n) for n in numbers)


def checked_value(key, value):
    """A ``CHECKED`` key's value as rows are compared and grouped by it: a data root by the folder it leads to (one
    reached through a symbolic link is that folder), every other value as recorded."""
    return os.path.realpath(value) if key == "data_root" and isinstance(value, str) else value


def compare(rows):
    """What the rows' files say of ``CHECKED``: ({key: [(value, [row numbers from 1])] for the keys whose values
    differ}, {key: [row numbers]} for the keys some rows record and others do not)."""
    differ, unrecorded = {}, {}
    for key in CHECKED:
        values, missing = {}, []
        for number, row in enumerate(rows, start=1):
            if key in row["results"]:
                value = row["results"][key]
                same = json.dumps(checked_value(key, value), sort_keys=True)
                values.setdefault(same, (value, []))[1].append(number)
            else:
                missing.append(number)
        if len(values) > 1:
            differ[key] = list(values.values())
        if missing and values:
            unrecorded[key] = missing
    return differ, unrecorded


def recorded_nowhere(rows):
    """The keys of ``CHECKED`` that no row's file records (all files of earlier versions): not checked at all."""
    return [key for key in CHECKED if not any(key in row["results"] for row in rows)]


def notes(rows, differ, unrecorded):
    """The lines under the table: the comparison's verdict, what differs, what cannot be checked (a key some rows
    do not record, or none), the rows selected on the test split (and those whose selection is not recorded) and
    the keys read from args.json."""
    lines = []
    if differ:
        lines.append(f"NOT comparable: the rows differ in {', '.join(differ)}.")
        for key, groups in differ.items():
            lines.append(f"- {key}: " + "; ".join(f"{shown(key, value)} ({row_numbers(numbers)})"
                                                  for value, numbers in groups))
    else:
        recorded = [key for key in CHECKED if key not in unrecorded and any(key in r["results"] for r in rows)]
        lines.append(f"Comparable: the rows have the same {', '.join(recorded)}." if recorded else
                     "Nothing to compare: the files record none of " + ", ".join(CHECKED) + ".")
    for key, numbers in unrecorded.items():
        lines.append(f"- {key}: not recorded in {row_numbers(numbers)} (a file of an earlier version), not checked "
                     f"there")
    nowhere = recorded_nowhere(rows)
    if nowhere and len(nowhere) < len(CHECKED):  # all of them: said by the verdict
        lines.append(f"- not recorded in any row (files of earlier versions), not checked: {', '.join(nowhere)}")
    tested = [n for n, row in enumerate(rows, start=1) if selected_on_test(row["results"])]
    if tested:
        lines.append(f"{TEST_SELECTED}: the epoch of {row_numbers(tested)} was selected on the test split (no "
                     f"--val_list); its test figures are optimistic.")
    unknown = [n for n, row in enumerate(rows, start=1) if selection_unknown(row["results"])]
    if unknown:
        lines.append(f"Not marked {TEST_SELECTED}: {row_numbers(unknown)} evaluated a checkpoint of a run that "
                     f"selected on the test split, but {'its file does' if len(unknown) == 1 else 'their files do'} "
                     f"not record which epoch the run selected (a file of an earlier version).")
    for number, row in enumerate(rows, start=1):
        if row["from_args"]:
            lines.append(f"Row {number}: {', '.join(row['from_args'])} read from the args.json of its run "
                         f"({row['file']} does not record them).")
    return lines


def per_class(rows):
    """The per-class comparison: ({"classes": [{"class", "index", "train", "group", "AP": [one per row]}], most
    training images first, ties by index}, note lines), or (None, notes saying why) when the rows do not record
    the same classes or a row's per-class AP (or training images) is not one value per class. A row without
    ``class_names`` (a file of an earlier version) is read in the classes' order of the first row that records
    them, said. The training images and groups (by its ``group_bounds``) are those of the first row that records
    ``train_class_freq``, said when that is not every row's; none recorded: ``None``, classes in their order."""
    names_of = {n: row["results"]["class_names"] for n, row in enumerate(rows, start=1)
                if "class_names" in row["results"]}
    if not names_of:
        return None, ["Per-class AP not shown: no row records its class_names (files of earlier versions)."]
    first = min(names_of)
    names = names_of[first]
    if any(other != names for other in names_of.values()):
        return None, ["Per-class AP not shown: the rows differ in class_names."]
    wrong = []
    for number, row in enumerate(rows, start=1):
        aps = row["results"].get("per_class_AP")
        if not isinstance(aps, list) or len(aps) != len(names):
            found = f"{len(aps)} per-class APs" if isinstance(aps, list) else "no per_class_AP"
            wrong.append(f"row {number} ({row['file']}) has {found} for the {len(names)} classes of row {first}")
    if wrong:
        return None, ["Per-class AP not shown: " + "; ".join(wrong) + "."]
    lines = [f"Per-class AP of {len(names)} classes, most training images first."]
    unnamed = [n for n in range(1, len(rows) + 1) if n not in names_of]
    if unnamed:
        lines.append(f"{row_numbers(unnamed).capitalize()}: no class_names recorded (a file of an earlier "
                     f"version); {'its' if len(unnamed) == 1 else 'their'} APs are read in the order of row "
                     f"{first}'s classes.")
    recorded = [n for n, row in enumerate(rows, start=1) if "train_class_freq" in row["results"]]
    if not recorded:
        lines.append("train and group: not recorded in any row (files of earlier versions); classes in their order.")
        order = [(i, None) for i in range(len(names))]
        freq = None
    else:
        source = rows[recorded[0] - 1]["results"]
        freq = source["train_class_freq"]
        if not isinstance(freq, list) or len(freq) != len(names):
            return None, [f"Per-class AP not shown: row {recorded[0]} ({rows[recorded[0] - 1]['file']}) has "
                          f"{len(freq) if isinstance(freq, list) else 'no list of'} train_class_freq for the "
                          f"{len(names)} classes of row {first}."]
        bounds = source.get("group_bounds") or {}  # as the row's groups were made
        order = classes_by_frequency(freq, **{k: bounds[k] for k in ("head_min", "medium_min") if k in bounds})
        differing = [key for key in ("train_class_freq", "group_bounds")
                     if any(rows[n - 1]["results"].get(key) != source.get(key) for n in recorded)]
        lacking = [n for n in range(1, len(rows) + 1) if n not in recorded]
        reasons = ([f"the rows differ in {' and '.join(differing)}"] if differing else []) + (
            [f"{row_numbers(lacking)} record{'s' if len(lacking) == 1 else ''} no train_class_freq"] if lacking else [])
        if reasons:
            lines.append(f"train and group: those of row {recorded[0]} ({'; '.join(reasons)}).")
    aps = [row["results"]["per_class_AP"] for row in rows]
    classes = [{"class": names[i], "index": i, "train": None if freq is None else freq[i], "group": group,
                "AP": [row_aps[i] for row_aps in aps]} for i, group in order]
    return {"classes": classes}, lines


def seed_of(row):
    """The seed of a row's run (its args.json's), None where not recorded."""
    seed = row["args"].get("seed")
    return seed if is_int(seed) else None


def checkpoint_kind(results):
    """Which checkpoint a results file evaluated: ``best.pt``, ``last.pt``, another file (``other``), or none
    (zero-shot)."""
    name = Path(str(results.get("checkpoint"))).name if results.get("checkpoint") else None
    return name if name in (None, "best.pt", "last.pt") else "other"


def settings_read(method, saved):
    """Of a trained run's args.json (``saved``), the settings of ``CONFIGURATION`` that the run read, as lmpt/train.py
    notes the others: without the flags only other methods read (``settings.METHOD_ONLY_FLAGS``), those its
    ``--cseloss`` (``losses.CSE_LOSS_FLAGS``) or its ``--loss_function`` (μ and λ: ``losses.db_flags_read``) does
    not read, ``--ctx_init`` as its words ('a_photo' is 'a photo') and ``--n_ctx`` as the number of context vectors
    (beside a ``--ctx_init``, its token count)."""
    unread = {key for _, keys, methods in METHOD_ONLY_FLAGS if method not in methods for key in keys}
    if saved.get("cseloss") in CSE_LOSS_FLAGS:
        unread |= {key for keys in CSE_LOSS_FLAGS.values() for key in keys} - set(CSE_LOSS_FLAGS[saved["cseloss"]])
    if isinstance(saved.get("loss_function"), str):
        unread |= set(DB_LOSS_FLAGS) - set(db_flags_read(saved["loss_function"]))
    read = {key: saved[key] for key in CONFIGURATION if key in saved and key not in unread}
    if isinstance(read.get("ctx_init"), str):
        read["ctx_init"] = context_words(read["ctx_init"])
    if "n_ctx" in read and isinstance(saved.get("ctx_init"), str) and context_words(saved["ctx_init"]):
        try:
            read["n_ctx"] = prompt_texts([], read["n_ctx"], saved["ctx_init"])[0]
        except (TypeError, ValueError):  # not a run of these scripts' (an init without tokens is refused there)
            pass
    return read


def configuration(row):
    """What a row is, but its seed: its file's method, CLIP (by sha256 where recorded), checkpoint kind, selection
    split and ``CHECKED`` keys, and of a trained run's args.json the settings of ``CONFIGURATION`` that it read
    (``settings_read``), as one text to group by."""
    r = row["results"]
    method = r.get("method")
    saved = {} if method == ZERO_SHOT else settings_read(method, row["args"])
    clip = r.get("backbone_sha256") or r.get("backbone")
    return json.dumps([method_cell(r), clip, checkpoint_kind(r), r.get("selection_split"),
                       {key: checked_value(key, r.get(key)) for key in CHECKED}, saved], sort_keys=True, default=str)


def seed_label(labels):
    """The label of a group: its rows' common label with ``seed<N>`` as ``seed*`` (``runs/x_seed*``) where it has
    several rows, else its row's label; the first row's label with ``, …`` where the labels differ otherwise."""
    if len(labels) == 1:
        return labels[0]
    common = {re.sub(r"seed\d+", "seed*", label) for label in labels}
    return common.pop() if len(common) == 1 else f"{labels[0]}, …"


def over_seeds(rows):
    """The rows grouped by ``configuration``, in the order of their first rows: ([{"run": ``seed_label``, "rows":
    [numbers from 1], "seeds", "method", "backbone", "mean": {column: value}, "std": {column: value}}], note lines).
    A seed counted once (a later row of the same configuration and seed is left out, said); a row whose seed is
    not recorded is a group of its own, said."""
    groups, lines, unseeded = {}, [], []
    for number, row in enumerate(rows, start=1):
        seed = seed_of(row)
        if seed is None:
            unseeded.append(number)
        group = groups.setdefault(configuration(row) if seed is not None else f"row {number}",
                                  {"members": [], "seeds": []})
        if seed is not None and seed in group["seeds"]:
            first = group["members"][group["seeds"].index(seed)]
            lines.append(f"Row {number} left out: the configuration and seed ({seed}) of row {first}, counted once.")
            continue
        group["members"].append(number)
        group["seeds"].append(seed)
    table = []
    for group in groups.values():
        members = [rows[n - 1] for n in group["members"]]
        stats = {column: mean_std([m["results"].get(column) for m in members]) for column in COLUMNS}
        first = members[0]["results"]
        table.append({"run": seed_label([m["run"] for m in members]), "rows": group["members"],
                      "seeds": group["seeds"], "method": method_cell(first), "backbone": first.get("backbone"),
                      "mean": {c: stats[c][0] for c in COLUMNS}, "std": {c: stats[c][1] for c in COLUMNS}})
    head = [f"Mean ± std (n − 1) over seeds of {len(table)} configuration{'s' * (len(table) != 1)}: the rows that "
            f"differ in their seed alone (files and args.json), one seed counted once."]
    if unseeded:
        head.append(f"{row_numbers(unseeded).capitalize()}: no seed recorded (no args.json of its run, or no seed "
                    f"in it); {'a group' if len(unseeded) == 1 else 'each a group'} of its own.")
    return table, head + lines


def render_over_seeds(table, lines):
    """The --over_seeds part of the markdown: its notes, then the table (runs, rows, seeds, method, CLIP, and each
    metric's mean ± std; the mean alone for one seed)."""
    body = [[g["run"], ", ".join(map(str, g["rows"])), ", ".join("?" if s is None else str(s) for s in g["seeds"]),
             g["method"], str(g["backbone"] or "?"),
             *(mean_std_cell(g["mean"][c], g["std"][c], len(g["rows"])) for c in COLUMNS)] for g in table]
    header = ["runs", "rows", "seeds", "method", "CLIP", *COLUMNS]
    return "\n".join(lines) + "\n\n" + markdown_table(header, body) + "\n"


def difference_cell(first, second):
    """``second − first`` as a signed cell (``+1.25``), ``n/a`` where either is none."""
    if first is None or second is None:
        return metric_cell(None)
    return f"{second - first:+.2f}"


def render_per_class(rows, table, lines):
    """The per-class part of the markdown: its notes, then the table (class, train, group, the AP of each row by
    its number and, for two rows, ``2 − 1``)."""
    if table is None:
        return "\n".join(lines) + "\n"
    header = ["class", "train", "group", *[f"AP {n}" for n in range(1, len(rows) + 1)]]
    header += ["2 − 1"] if len(rows) == 2 else []
    body = []
    for c in table["classes"]:
        cells_ = [str(c["class"]), "?" if c["train"] is None else str(c["train"]), c["group"] or "?",
                  *[metric_cell(ap) for ap in c["AP"]]]
        body.append(cells_ + ([difference_cell(*c["AP"])] if len(rows) == 2 else []))
    return "\n".join(lines) + "\n\n" + markdown_table(header, body) + "\n"


def render_markdown(rows, differ, unrecorded, per_class_part=None, seeds_part=None):
    """What is printed (and written to a .md): the table, then the ``notes``, then (with --over_seeds) the means
    over seeds (``over_seeds``' table and notes), then (with --per_class) the per-class part (``per_class``')."""
    table = markdown_table([*HEADER, *COLUMNS], [cells(row) for row in rows])
    text = table + "\n\n" + "\n".join(notes(rows, differ, unrecorded)) + "\n"
    if seeds_part is not None:
        text += "\n" + render_over_seeds(*seeds_part)
    return text if per_class_part is None else text + "\n" + render_per_class(rows, *per_class_part)


def plain_row(row, per_class_ap=False, seed=False):
    """A row as the CSV and JSON outputs hold it: its label and file, method, CLIP, epoch, metrics and checked keys
    (with ``seed``, its run's seed, ``seed_of``, after its CLIP; with ``per_class_ap``, its per_class_AP)."""
    r = row["results"]
    plain = {"run": row["run"], "file": row["file"], "method": r.get("method"), "templates": r.get("templates"),
             "backbone": r.get("backbone"), **({"seed": seed_of(row)} if seed else {}), "epoch": epoch_of(r),
             "selection_split": r.get("selection_split"), "selected_on_test": selected_on_test(r),
             **{c: r.get(c) for c in COLUMNS}, **{key: r.get(key) for key in CHECKED}}
    return {**plain, "per_class_AP": r.get("per_class_AP")} if per_class_ap else plain


def render_csv(rows, per_class_ap=False, seed=False):
    """The rows as CSV (``plain_row``, full precision; a list or object as JSON text), without the notes."""
    out = io.StringIO()
    flat = [plain_row(row, per_class_ap, seed) for row in rows]
    writer = csv.DictWriter(out, fieldnames=list(flat[0]), lineterminator="\n")
    writer.writeheader()
    for row in flat:
        writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()})
    return out.getvalue()


def as_json(rows, differ, unrecorded, per_class_part=None, seeds_part=None):
    """The comparison as a .json holds it: the rows (``plain_row``), whether they compare, what differs (values and
    their rows), the keys some rows do not record (with those rows) and those none does, and the notes; with
    --over_seeds, each row's seed and "over_seeds": {"groups": ``over_seeds``' list, "notes"}; with --per_class,
    "per_class": {"classes": ``per_class``' list or null, "notes"}."""
    compared = {"rows": [plain_row(row, per_class_part is not None, seeds_part is not None) for row in rows],
                "comparable": not differ,
                "differ": {key: [{"value": value, "rows": numbers} for value, numbers in groups]
                           for key, groups in differ.items()},
                "not_recorded": unrecorded, "not_recorded_in_any_row": recorded_nowhere(rows),
                "notes": notes(rows, differ, unrecorded)}
    if seeds_part is not None:
        compared["over_seeds"] = {"groups": seeds_part[0], "notes": seeds_part[1]}
    if per_class_part is not None:
        table, lines = per_class_part
        compared["per_class"] = {"classes": None if table is None else table["classes"], "notes": lines}
    return compared


def check_output(path):
    """Before any work: ``--output`` ending in one of ``FORMATS``, not a folder, in a folder that can be written; a
    .json not a run's own file (results.json, test_results.json, args.json: refused as lmpt/test.py's --output is)."""
    if path.suffix not in FORMATS:
        raise ValueError(f"--output {path}: expected a file ending in {', '.join(FORMATS)}")
    if path.suffix == ".json":
        return check_results_file(path, own=None, hint="such as table.json")
    if path.is_dir():
        raise IsADirectoryError(f"--output {path}: a folder; expected the path of a {path.suffix} file")
    return check_writable_dir(path.parent, "--output")


def build_parser():
    """The command line: the runs (folders or files), --test_results, --output, --strict, --per_class,
    --over_seeds."""
    p = script_parser(__doc__)
    p.add_argument("paths", nargs="+", type=Path, help="run folders and results files, a row each, in this order")
    p.add_argument("--test_results", action="store_true",
                   help="for a run folder, its test_results.json (lmpt/test.py's) where it has one, else results.json")
    p.add_argument("--output", type=Path, default=None,
                   help=f"also write the comparison to this file, as its suffix says ({', '.join(FORMATS)})")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when the rows are not comparable")
    p.add_argument("--per_class", action="store_true",
                   help="also each class's AP in every row (and, for two rows, their difference); in --output's "
                        ".csv, each row's per_class_AP")
    p.add_argument("--over_seeds", action="store_true",
                   help="also the mean ± std (n − 1) of each metric over the rows that differ in their seed alone "
                        "(their files and runs' args.json; a seed counted once); in --output's .csv, each row's "
                        "seed")
    return p


def main(argv=None):
    """Print the comparison of the runs of ``argv``, and write it to --output; returns the exit status (1: the rows
    differ and --strict is given). A path or --output that cannot be used exits with status 2, naming it."""
    p = build_parser()
    args = p.parse_args(argv)
    try:
        if args.output is not None:
            check_output(args.output)
        rows = [read_row(path, args.test_results) for path in args.paths]
    except (OSError, ValueError) as error:
        p.error(str(error))
    if args.output is not None and args.output.exists():
        compared = [n for n, row in enumerate(rows, start=1) if os.path.samefile(args.output, row["file"])]
        if compared:
            p.error(f"--output {args.output}: the file of {row_numbers(compared)}, one of the files compared; "
                    f"expected another file")
    differ, unrecorded = compare(rows)
    per_class_part = per_class(rows) if args.per_class else None
    seeds_part = over_seeds(rows) if args.over_seeds else None
    text = render_markdown(rows, differ, unrecorded, per_class_part, seeds_part)
    print(text, end="")
    if args.output is not None:  # written atomically, as the runs' files are
        if args.output.suffix == ".md":
            save_text(args.output, text)
        elif args.output.suffix == ".csv":
            save_text(args.output, render_csv(rows, args.per_class, args.over_seeds))
        else:
            save_json(args.output, as_json(rows, differ, unrecorded, per_class_part, seeds_part))
        print(f"[compare_runs] written to {args.output}")
    return 1 if args.strict and differ else 0


if __name__ == "__main__":
    printable_output()
    sys.exit(main())
