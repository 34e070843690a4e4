"""Results as people read them: the printed report of an evaluation (``format_results``), the columns
``tools/demo.py`` and ``tools/compare_runs.py`` print, a metric's cell (the same in the report and the tables),
the mean ± std over seeds (``mean_std``, ``mean_std_cell``) and the markdown table of those tools and
``tools/sweep_cse.py``.

No I/O: results are the JSON objects of ``results.json`` / ``test_results.json`` (metrics in percent; a metric
saved as null, such as the mAP of a group without classes, is shown as ``n/a``).
"""
import math
import re
import statistics

from .metrics import GROUPS, classes_by_frequency, to_numpy

# the metrics of the comparison tables: total and head/medium/tail mAP, and the F1s at the threshold
COLUMNS = ("mAP", "head_mAP", "medium_mAP", "tail_mAP", "CF1", "OF1")


def metric_cell(value):
    """A metric as a table shows it: two decimals, ``n/a`` for none (null in the file, or NaN). The printed report of
    an evaluation (``format_results``) shows its metrics so too."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.2f}"


def metric_cells(results, columns=COLUMNS):
    """The cells of ``columns`` of one results object (a column it lacks is ``n/a``)."""
    return [metric_cell(results.get(column)) for column in columns]


def mean_std(values):
    """(mean, sample standard deviation (n − 1)) of a metric's values over seeds; the deviation of one value is 0.0.
    (None, None) where a value is none (null in its file, or NaN) or there is none."""
    if not values or any(metric_cell(v) == "n/a" for v in values):
        return None, None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def mean_std_cell(mean, std, n=2):
    """``26.15 ± 0.20``: a mean over ``n`` seeds (by default several: tools/sweep_cse.py shows ``± 0.00`` for one)
    and its deviation; the mean alone for ``n`` 1, ``n/a`` for none."""
    if mean is None:
        return metric_cell(None)
    return f"{mean:.2f} ± {std:.2f}" if n > 1 else metric_cell(mean)


def markdown_table(header, rows):
    """A markdown table of the column names ``header`` and ``rows`` (lists of cells, as text)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def _run_line(results):
    """What an evaluation evaluated, from its results' keys where they have them: the method, the CLIP and the
    epoch of the checkpoint (and how the run selected its epoch), e.g. ``lmpt, CLIP ViT16, epoch 12 (selected on
    the val split)``; '' when they name none of these."""
    parts = [str(results['method'])] if results.get('method') else []
    if results.get('backbone'):
        parts.append(f"CLIP {results['backbone']}")
    epoch, selected, split = (results.get(k) for k in ('checkpoint_epoch', 'selected_epoch', 'selection_split'))
    if epoch is not None:
        on = f' on the {split} split' if split else ''
        if selected is None or selected == epoch:
            parts.append(f'epoch {epoch}' + (f' (selected{on})' if selected is not None else ''))
        else:
            parts.append(f'epoch {epoch} (the run selected epoch {selected}{on})')
    return ', '.join(parts)


def format_results(results, class_names, train_class_freq):
    """A printable report: what was evaluated (method, CLIP, epoch: the keys ``results`` has of them), the summary
    table, the threshold and score of CP to OF1, the top-k metrics if any, then per-class AP sorted by training
    frequency."""
    freq = to_numpy(train_class_freq)
    if len(class_names) != len(freq) or len(results['per_class_AP']) != len(freq):
        raise ValueError(f"format_results: {len(class_names)} class names, {len(freq)} frequencies and "
                         f"{len(results['per_class_AP'])} per-class APs; expected the same number")
    classes = classes_by_frequency(freq)  # [(index, group)], most training images first
    keys = ('mAP', 'head_mAP', 'medium_mAP', 'tail_mAP', 'CP', 'CR', 'CF1', 'OP', 'OR', 'OF1')
    heads = ('total', 'head', 'medium', 'tail', 'CP', 'CR', 'CF1', 'OP', 'OR', 'OF1')
    run = _run_line(results)
    lines = [run] if run else []
    lines += ['  '.join(f'{h:>7}' for h in heads), '  '.join(f'{metric_cell(results.get(k)):>7}' for k in keys)]
    if results.get('thre') is not None:
        score = f" ({results['score']} scores)" if results.get('score') else ''
        lines.append(f"CP, CR, CF1, OP, OR, OF1 at thre {results['thre']:g}{score}")
    for k in sorted(int(m.group(1)) for m in map(re.compile(r'top(\d+)_precision').fullmatch, results) if m):
        lines.append(f'top-{k}: ' + '  '.join(f"{name} {metric_cell(results.get(f'top{k}_{name}'))}"
                                               for name in ('precision', 'recall', 'F1')))
    sizes = {g: sum(1 for _, group in classes if group == g) for g in GROUPS}
    lines.append('classes: ' + ', '.join(f'{g} {sizes[g]}' for g in GROUPS))
    missing = results.get('classes_without_positives') or []
    if missing:
        lines.append('no positive in the evaluation set (left out of mAP): '
                     + ', '.join(class_names[i] for i in missing))
    width = max([len('class')] + [len(str(c)) for c in class_names])
    lines += ['', f"{'class':<{width}}  {'train':>6}  {'group':<6}  {'AP':>7}"]
    for i, group in classes:
        lines.append(f'{class_names[i]:<{width}}  {int(freq[i]):>6}  {group:<6}  '
                     f'{metric_cell(results["per_class_AP"][i]):>7}')
    return '\n'.join(lines)
