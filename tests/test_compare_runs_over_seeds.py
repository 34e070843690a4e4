"""tools/compare_runs.py --over_seeds: the mean ± std (n − 1) of each metric over the rows that differ in their
seed alone. What a run is comes from its results file and its args.json without the flags that say where it reads,
computes or writes; a seed is counted once; a row without a recorded seed is a group of its own."""
import csv
import io
import json
import statistics
import sys

from conftest import ROOT
from lmpt import test as test_script
from lmpt import train as train_script
from zero_shot_clip import test as zero_shot_script

sys.path.insert(0, str(ROOT / "tools"))
import compare_runs  # noqa: E402
from test_compare_runs import write_run  # noqa: E402

ARGS = {"dataset": "voc-lt", "seed": 0, "lr": 0.002, "lam": 0.5, "epochs": 10, "device": "cuda", "num_workers": 8,
        "output_dir": "/runs/x", "cache_dir": None, "pretrain_clip": "/models/ViT-B-16.pt", "resume": None}


def run(tmp_path, name, seed, mAP, args=None, **keys):
    return str(write_run(tmp_path / name, args={**ARGS, "seed": seed, **(args or {})}, mAP=mAP, **keys))


def seed_table(out):
    """The --over_seeds table's rows as lists of cells."""
    part = out[out.index("| runs | rows | seeds |"):]
    return [[c.strip() for c in line.strip("|").split("|")] for line in part.splitlines()[2:] if line.startswith("|")]


def test_rows_that_differ_in_their_seed_alone_are_averaged(tmp_path, capsys):
    paths = [run(tmp_path, "coop_seed0", 0, 30.0, CF1=10.0), run(tmp_path, "coop_seed1", 1, 32.0, CF1=11.0),
             # where the run was and what it ran on are not what it is: the same configuration
             run(tmp_path, "coop_seed2", 2, 34.0, CF1=15.0,
                 args={"device": "cpu", "num_workers": 0, "output_dir": "/elsewhere", "cache_dir": "/c"}),
             run(tmp_path, "lmpt_seed0", 0, 40.0, method="lmpt"), run(tmp_path, "lmpt_seed1", 1, 41.0, method="lmpt")]
    assert compare_runs.main([*paths, "--over_seeds"]) == 0
    out = capsys.readouterr().out
    assert "Mean ± std (n − 1) over seeds of 2 configurations" in out
    cf1 = statistics.stdev([10.0, 11.0, 15.0])
    assert seed_table(out) == [
        ["coop_seed*", "1, 2, 3", "0, 1, 2", "coop", "ViT16", "32.00 ± 2.00", "40.00 ± 0.00", "30.00 ± 0.00", "n/a",
         f"{12.0:.2f} ± {cf1:.2f}", "12.50 ± 0.00"],
        ["lmpt_seed*", "4, 5", "0, 1", "lmpt", "ViT16", f"40.50 ± {statistics.stdev([40.0, 41.0]):.2f}",
         "40.00 ± 0.00", "30.00 ± 0.00", "n/a", "10.00 ± 0.00", "12.50 ± 0.00"]]
    assert "| coop_seed0 | coop | ViT16 | 4 | 30.00 |" in out  # the runs' own table first, as without the flag


def test_a_setting_other_than_the_seed_parts_the_rows(tmp_path, capsys):
    lmpt = dict(method="lmpt")
    paths = [run(tmp_path, "a_seed0", 0, 30.0), run(tmp_path, "a_seed1", 1, 32.0),
             run(tmp_path, "b_seed0", 0, 33.0, args={"epochs": 20}),
             run(tmp_path, "c_seed0", 0, 35.0, thre=0.75), run(tmp_path, "d_seed0", 0, 36.0, backbone_sha256="cd" * 32),
             run(tmp_path, "e_seed0", 0, 37.0, args={"lam": 0.25}, **lmpt),
             run(tmp_path, "e_seed1", 1, 38.0, args={"lam": 0.25}, **lmpt), run(tmp_path, "f_seed0", 0, 39.0, **lmpt),
             run(tmp_path, "g_seed0", 0, 40.0, checkpoint="/runs/g/last.pt"),
             # what CoOp does not read, the dataset's spelling, a check of the labels and the CLIP's path: the same
             run(tmp_path, "h_seed2", 2, 34.0, backbone="/elsewhere/ViT-B-16.pt",
                 args={"lam": 0.25, "dataset": "VOC", "nb_classes": 20})]
    compare_runs.main([*paths, "--over_seeds"])
    table = seed_table(capsys.readouterr().out)
    assert [(r[0], r[1], r[2], r[5]) for r in table] == [
        ("a_seed0, …", "1, 2, 10", "0, 1, 2", "32.00 ± 2.00"), ("b_seed0", "3", "0", "33.00"),
        ("c_seed0", "4", "0", "35.00"), ("d_seed0", "5", "0", "36.00"), ("e_seed*", "6, 7", "0, 1", "37.50 ± 0.71"),
        ("f_seed0", "8", "0", "39.00"), ("g_seed0", "9", "0", "40.00")]


def test_a_seed_is_counted_once_and_a_row_without_a_seed_stands_alone(tmp_path, capsys):
    paths = [run(tmp_path, "x_seed0", 0, 30.0), run(tmp_path, "x_seed1", 1, 32.0),
             str(write_run(tmp_path / "copy", mAP=50.0, args={**ARGS, "seed": 1})),  # seed 1 again: left out
             str(write_run(tmp_path / "loose", name="out.json", mAP=20.0) / "out.json"),  # no args.json: no seed
             str(write_run(tmp_path / "loose2", name="out.json", mAP=22.0) / "out.json")]
    compare_runs.main([*paths, "--over_seeds"])
    out = capsys.readouterr().out
    assert "Row 3 left out: the configuration and seed (1) of row 2, counted once." in out
    assert "Rows 4, 5: no seed recorded (no args.json of its run, or no seed in it); each a group of its own." in out
    assert [(r[0], r[1], r[2], r[5]) for r in seed_table(out)] == [
        ("x_seed*", "1, 2", "0, 1", "31.00 ± 1.41"), ("loose/out.json", "4", "?", "20.00"),
        ("loose2/out.json", "5", "?", "22.00")]


def test_the_means_are_in_the_json_and_each_rows_seed_in_the_csv(tmp_path, capsys):
    paths = [run(tmp_path, "r_seed3", 3, 30.0), run(tmp_path, "r_seed4", 4, 33.0)]
    compare_runs.main([*paths, "--over_seeds", "--output", str(tmp_path / "t.json")])
    saved = json.loads((tmp_path / "t.json").read_text())
    [group] = saved["over_seeds"]["groups"]
    assert (group["run"], group["rows"], group["seeds"], group["method"]) == ("r_seed*", [1, 2], [3, 4], "coop")
    assert group["mean"]["mAP"] == 31.5 and group["std"]["mAP"] == statistics.stdev([30.0, 33.0])
    assert group["mean"]["tail_mAP"] is None and group["std"]["tail_mAP"] is None
    assert saved["over_seeds"]["notes"][0].startswith("Mean ± std (n − 1) over seeds of 1 configuration:")
    assert [row["seed"] for row in saved["rows"]] == [3, 4]
    compare_runs.main([*paths, "--over_seeds", "--output", str(tmp_path / "t.csv")])
    rows = list(csv.DictReader(io.StringIO((tmp_path / "t.csv").read_text())))
    assert [row["seed"] for row in rows] == ["3", "4"]
    compare_runs.main([*paths, "--output", str(tmp_path / "plain.json")])  # without the flag: as before
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert "over_seeds" not in plain and "seed" not in plain["rows"][0]
    assert "Mean ± std" not in capsys.readouterr().out.split("[compare_runs] written to")[-1]


def test_a_group_is_labelled_by_its_runs_with_the_seed_starred():
    assert compare_runs.seed_label(["runs/voc-lt_lmpt_ViT16_seed0", "runs/voc-lt_lmpt_ViT16_seed12"]) == \
        "runs/voc-lt_lmpt_ViT16_seed*"
    assert compare_runs.seed_label(["a_seed0", "mine"]) == "a_seed0, …"
    assert compare_runs.seed_label(["runs/a_seed3"]) == "runs/a_seed3"  # one row: its own label


def test_real_runs_of_two_seeds_are_two_configurations(tmp_path, tiny_data_root, tiny_vit_checkpoint, capsys):
    """Zero-shot and CoOp runs of seeds 0 and 1, written where each user wants them and with other loader
    settings (zero-shot's batch size too): one configuration a method, the means of their results.json files;
    zero-shot, which draws nothing at random, has no spread. lmpt/test.py's evaluations of the runs' last.pt,
    kept in a folder of their own, are a third: of the runs their checkpoints name, by their seeds."""
    common = ["--dataset", "voc-lt", "--data_root", str(tiny_data_root), "--device", "cpu",
              "--cache_dir", str(tmp_path / "cache")]
    paths, evaluations = [], []
    (tmp_path / "evaluations").mkdir()
    for seed, workers, batch in ((0, "0", "8"), (1, "1", "16")):
        zs, coop = tmp_path / f"zs_seed{seed}", tmp_path / f"mine{seed}" / f"coop_seed{seed}"
        zero_shot_script.main([*common, "--num_workers", workers, "--batch_size", batch, "--seed", str(seed),
                               "--pretrain_clip_path", str(tiny_vit_checkpoint), "--templates", "single",
                               "--output_dir", str(zs)])
        train_script.main([*common, "--num_workers", workers, "--batch_size", "8", "--seed", str(seed),
                           "--pretrain_clip", str(tiny_vit_checkpoint), "--training_method", "coop", "--n_ctx", "4",
                           "--epochs", "2", "--output_dir", str(coop)])
        evaluations.append(tmp_path / "evaluations" / f"last{seed}.json")
        test_script.main(["--checkpoint", str(coop / "last.pt"), "--device", "cpu", "--num_workers", "0",
                          "--cache_dir", str(tmp_path / "cache"), "--output", str(evaluations[-1])])
        paths += [zs, coop]
    capsys.readouterr()
    compare_runs.main([*map(str, paths + evaluations), "--over_seeds"])
    table = seed_table(capsys.readouterr().out)
    maps = [json.loads((path / "results.json").read_text())["mAP"] for path in paths]
    lasts = [json.loads(path.read_text())["mAP"] for path in evaluations]
    assert [row[:4] for row in table] == [["zs_seed*", "1, 3", "0, 1", "zero-shot (single)"],
                                          ["coop_seed*", "2, 4", "0, 1", "coop"],
                                          ["evaluations/last0.json, …", "5, 6", "0, 1", "coop"]]
    assert table[0][5] == f"{maps[0]:.2f} ± 0.00" and maps[0] == maps[2]
    assert table[1][5] == f"{statistics.mean(maps[1::2]):.2f} ± {statistics.stdev(maps[1::2]):.2f}"
    assert table[2][5] == f"{statistics.mean(lasts):.2f} ± {statistics.stdev(lasts):.2f}"


def test_one_data_folder_reached_through_a_link_is_one_data_root(tmp_path, capsys):
    """Runs on one data folder, one named through a symbolic link to it (~/data -> /gpfs/…/data), compare and
    group as one data root; another folder does not."""
    (tmp_path / "data").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    paths = [run(tmp_path, "coop_seed0", 0, 30.0, data_root=str(tmp_path / "data")),
             run(tmp_path, "coop_seed1", 1, 32.0, data_root=str(tmp_path / "link"))]
    assert compare_runs.main([*paths, "--over_seeds", "--strict"]) == 0
    out = capsys.readouterr().out
    assert "NOT comparable" not in out and "over seeds of 1 configuration" in out
    assert seed_table(out)[0][:3] == ["coop_seed*", "1, 2", "0, 1"]
    other = run(tmp_path, "coop_seed2", 2, 34.0, data_root=str(tmp_path / "other"))
    assert compare_runs.main([*paths, other, "--strict"]) == 1
    assert f"- data_root: {tmp_path / 'data'} (rows 1, 2); {tmp_path / 'other'} (row 3)" in capsys.readouterr().out


def test_flags_a_run_did_not_read_do_not_part_the_rows(tmp_path, capsys):
    """As lmpt/train.py notes them without effect: μ and λ (--gamma, --neg_scale, as the published command passes
    them) under a loss that reads neither, --cse_gamma under a --cseloss without it, and --n_ctx beside a
    --ctx_init (the context is its tokens). Where they are read, they part the rows."""
    same = [("bce", {"loss_function": "bce", "gamma": 0.2, "neg_scale": 2.0}, {"loss_function": "bce"}),
            ("hinge", {"cseloss": "hinge", "cse_gamma": 2.0}, {"cseloss": "hinge", "cse_gamma": 0.5}),
            ("init", {"ctx_init": "a photo of a", "n_ctx": 16}, {"ctx_init": "a_photo_of_a", "n_ctx": 4})]
    other = [("dbl", {"loss_function": "dbl", "gamma": 0.2}, {"loss_function": "dbl", "gamma": 0.3}),
             ("random", {"ctx_init": "", "n_ctx": 16}, {"ctx_init": "", "n_ctx": 4})]
    for name, first, second in same + other:
        paths = [run(tmp_path, f"{name}_seed0", 0, 30.0, args=first, method="lmpt"),
                 run(tmp_path, f"{name}_seed1", 1, 32.0, args=second, method="lmpt")]
        compare_runs.main([*paths, "--over_seeds"])
        groups = len(seed_table(capsys.readouterr().out))
        assert groups == (1 if (name, first, second) in same else 2), name
