"""Tables of results files: the columns ``tools/demo.py`` and ``tools/compare_runs.py`` print, a metric's cell (also
in ``metrics.format_results``' printed report) and the markdown table of those tools and ``tools/sweep_cse.py``.

No I/O: rows are the JSON objects of ``results.json`` / ``test_results.json`` (metrics in percent; a metric
saved as null, such as the mAP of a group without classes, is shown as ``n/a``).
"""
import math

# the metrics of the comparison tables: total and head/medium/tail mAP, and the F1s at the threshold
COLUMNS = ("mAP", "head_mAP", "medium_mAP", "tail_mAP", "CF1", "OF1")


def metric_cell(value):
    """A metric as a table shows it: two decimals, ``n/a`` for none (null in the file, or NaN). The printed report of
    an evaluation (``metrics.format_results``) shows its metrics so too."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.2f}"


def metric_cells(results, columns=COLUMNS):
    """The cells of ``columns`` of one results object (a column it lacks is ``n/a``)."""
    return [metric_cell(results.get(column)) for column in columns]


def markdown_table(header, rows):
    """A markdown table of the column names ``header`` and ``rows`` (lists of cells, as text)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)
