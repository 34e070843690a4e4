"""Default run folders: one backbone tag however the backbone was given, and a missing default run named well."""
import pytest

from finetune_clip import fc as fc_script
from lmpt import cli
from lmpt import test as test_script
from lmpt.backbones import backbone_tag, same_backbone
from zero_shot_clip import test as zero_shot_script


@pytest.mark.parametrize("given,tag", [("ViT16", "ViT16"), ("ViT-B/16", "ViT16"),
                                       ("../pretrained/ViT-B-16.pt", "ViT16"),
                                       ("/elsewhere/ViT-L-14-336px.pt", "ViT14@336"), ("RN50", "RN50"),
                                       ("pretrained/RN50.pt", "RN50"), ("/x/my-clip.pt", "my-clip"),
                                       ("/x/ViT-B-16.pth", "ViT-B-16")])
def test_a_backbone_is_tagged_by_its_short_name_also_when_given_as_the_path_of_its_file(given, tag):
    assert backbone_tag(given) == tag


def test_the_published_fine_tune_and_zero_shot_commands_write_the_folders_test_py_finds():
    # the published commands pass the file's path, lmpt/test.py (and README) the short name
    path = ["--pretrain_clip_path", "../pretrained/ViT-B-16.pt", "--seed", "0"]
    probe = fc_script.parse_args(["--dataset", "voc-lt", *path])
    assert probe.output_dir.name == "voc-lt_linear-probe_ViT16_seed0"
    assert test_script.parse_args(["--training_method", "linear-probe", "--pretrain_clip", "ViT16"]).checkpoint == \
        probe.output_dir
    zero_shot = zero_shot_script.parse_args(["--dataset", "COCO", "--nb_classes", "80", *path])
    assert zero_shot.output_dir.name == "coco-lt_zero-shot_ViT16_seed0"


def test_a_missing_default_run_names_its_script_and_the_runs_on_other_backbones(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "REPO_ROOT", tmp_path)
    args = test_script.parse_args(["--training_method", "linear-probe", "--pretrain_clip", "RN50", "--seed", "1"])
    with pytest.raises(FileNotFoundError) as error:
        test_script.check_default_run(args)
    assert str(error.value) == (f"{tmp_path / 'runs' / 'voc-lt_linear-probe_RN50_seed1'}: no run here (the default "
                                f"run folder of finetune_clip/fc.py for --training_method linear-probe, --dataset "
                                f"voc-lt, --pretrain_clip RN50, --seed 1); pass the run folder with --checkpoint")
    for name in ("voc-lt_linear-probe_my-clip_seed1", "voc-lt_linear-probe_ViT16_seed1", "voc-lt_lmpt_RN50_seed1",
                 "voc-lt_linear-probe_RN50_seed10", "coco-lt_linear-probe_RN50_seed1"):
        (tmp_path / "runs" / name).mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as error:
        test_script.check_default_run(args)
    runs = tmp_path / "runs"
    assert str(error.value).endswith(f"runs of that dataset, method and seed on other backbones: "
                                     f"{runs / 'voc-lt_linear-probe_ViT16_seed1'}, "
                                     f"{runs / 'voc-lt_linear-probe_my-clip_seed1'}; pass one with --checkpoint")
    lmpt_args = test_script.parse_args(["--dataset", "VOC", "--pretrain_clip", "ViT16", "--seed", "1"])
    with pytest.raises(FileNotFoundError, match="the default run folder of lmpt/train.py for --training_method "
                                                "lmpt, --dataset VOC, --pretrain_clip ViT16, --seed 1"):
        test_script.check_default_run(lmpt_args)
    (runs / "voc-lt_linear-probe_RN50_seed1").mkdir()
    test_script.check_default_run(args)  # there now
    given = test_script.parse_args(["--checkpoint", str(tmp_path / "nowhere")])
    test_script.check_default_run(given)  # a --checkpoint given is for the loader to refuse


def test_a_name_and_the_path_of_its_file_are_one_backbone_and_two_files_are_two(tmp_path, monkeypatch):
    pretrained = tmp_path / "pretrained"
    (tmp_path / "finetuned").mkdir()
    pretrained.mkdir()
    for path in (pretrained / "RN50.pt", pretrained / "ViT-B-16.pt", tmp_path / "finetuned" / "RN50.pt"):
        path.write_bytes(b"weights")
    monkeypatch.chdir(tmp_path / "finetuned")
    cases = [("ViT16", "ViT-B/16", True), ("RN50", str(pretrained / "RN50.pt"), True),
             ("../pretrained/ViT-B-16.pt", "ViT-B/16", True), ("RN50", "RN101", False),
             ("RN50", "RN50.pt", False),  # the fine-tuned file in the current folder, not pretrained/RN50.pt
             (str(pretrained / "RN50.pt"), str(tmp_path / "finetuned" / "RN50.pt"), False),
             ("/nowhere/my.pt", "/nowhere/my.pt", True), ("/nowhere/a/RN50.pt", "/nowhere/b/RN50.pt", False)]
    for a, b, same in cases:
        assert same_backbone(a, b, pretrained) is same and same_backbone(b, a, pretrained) is same, (a, b)


def test_lmpt_test_py_refuses_a_missing_default_run_before_reading_anything(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "REPO_ROOT", tmp_path)
    (tmp_path / "runs" / "voc-lt_finetune-full_ViT16_seed0").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"voc-lt_finetune-full_RN50_seed0: no run here \(the default run "
                                                r"folder of finetune_clip/fc.py .*other backbones: .*ViT16_seed0"):
        test_script.main(["--training_method", "finetune-full", "--pretrain_clip", "RN50", "--device", "cpu"])


def test_a_run_folder_named_before_the_short_names_is_pointed_at(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "REPO_ROOT", tmp_path)
    earlier = tmp_path / "runs" / "voc-lt_linear-probe_ViT-B-16_seed0"
    path = ["--pretrain_clip_path", "../pretrained/ViT-B-16.pt"]
    fc_script.parse_args(path)
    assert "[run] note" not in capsys.readouterr().err  # no earlier folder: nothing to say
    earlier.mkdir(parents=True)
    args = fc_script.parse_args(path)
    assert args.output_dir == tmp_path / "runs" / "voc-lt_linear-probe_ViT16_seed0"
    assert (f"[run] note: {earlier} holds the run of this command from before a backbone's file was named by its "
            f"short name (ViT16); this run goes to {args.output_dir}; to continue or extend that one instead, pass "
            f"--resume {earlier}") in capsys.readouterr().err
    zero_shot_earlier = tmp_path / "runs" / "coco-lt_zero-shot_ViT-B-16_seed0"
    zero_shot_earlier.mkdir()
    zero_shot_script.parse_args(["--dataset", "COCO", "--nb_classes", "80", *path])
    assert f"--output_dir {zero_shot_earlier})" in capsys.readouterr().err
    args.output_dir.mkdir()
    fc_script.parse_args(path)  # the new folder exists: it is the run meant
    assert "[run] note" not in capsys.readouterr().err
