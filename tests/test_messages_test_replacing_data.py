"""lmpt/test.py's "replacing … of an earlier evaluation" note names the data that differs (test_results.json
records the dataset and the absolute data root, and the images scored), and judges the relative checkpoint of
an earlier version's file conservatively."""
import pytest

from lmpt.prompt_tuning import same_checkpoint


@pytest.mark.parametrize("old, new, same", [
    ("/w/runs/a/best.pt", "/w/runs/a/best.pt", True),
    ("/w/runs/b/best.pt", "/w/runs/a/best.pt", False),
    ("a/best.pt", "/w/runs/a/best.pt", True),  # the run folder and the file: the end of the path
    ("runs/a/best.pt", "/w/runs/a/best.pt", True),
    ("./runs/a/best.pt", "/w/runs/a/best.pt", True),
    ("../runs/a/best.pt", "/w/runs/a/best.pt", True),  # from a sibling folder of runs/
    ("../a/best.pt", "/w/runs/a/best.pt", True),
    ("best.pt", "/w/runs/OTHER/best.pt", False),  # any run's best.pt: not known to be this one
    ("./best.pt", "/w/runs/a/best.pt", False),
    ("../best.pt", "/w/runs/a/best.pt", False),
    ("b/best.pt", "/w/runs/a/best.pt", False),
    ("a/last.pt", "/w/runs/a/best.pt", False),
    ("x/runs/a/best.pt", "/w/runs/a/best.pt", False),
    ("", "/w/runs/a/best.pt", False),
    (None, "/w/runs/a/best.pt", False),
])
def test_a_relative_earlier_checkpoint_is_the_same_only_when_its_folder_and_name_end_the_path(old, new, same):
    assert same_checkpoint(old, new) is same
