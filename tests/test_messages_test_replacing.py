"""lmpt/test.py says when it replaces the results of an earlier evaluation (its test_results.json, or an --output
file), with their mAP and what differs, as zero_shot_clip/test.py does: for prompt and fine-tuning runs alike."""
import json

from conftest import write_lmpt_dataset
from finetune_clip import fc as fc_script
from lmpt import test as test_script
from lmpt import train as train_script
from test_reliability import train_argv


def evaluate_argv(run, cache, *extra):
    return ["--checkpoint", str(run), "--device", "cpu", "--num_workers", "0", "--cache_dir", str(cache), *extra]


def replacing(path, results, differ=""):
    return f"[test] replacing {path} of an earlier evaluation (mAP {results['mAP']:.2f}{differ})\n"


def check_replacing(run, cache, capsys):
    """Evaluations of ``run`` into its test_results.json and into an --output file, each replacing the last."""
    out = run / "test_results.json"
    first = test_script.main(evaluate_argv(run, cache))
    assert "replacing" not in capsys.readouterr().out  # nothing to replace
    second = test_script.main(evaluate_argv(run, cache, "--thre", "0.3"))  # the published threshold
    assert replacing(out, first, "; other thre") in capsys.readouterr().out
    test_script.main(evaluate_argv(run, cache, "--thre", "0.3"))  # the same evaluation again: nothing differs
    assert replacing(out, second) in capsys.readouterr().out

    own = run.parent / "own.json"
    test_script.main(evaluate_argv(run, cache, "--output", str(own)))
    assert "replacing" not in capsys.readouterr().out
    test_script.main(evaluate_argv(run, cache, "--output", str(own), "--score", "sigmoid", "--thre", "0.3"))
    assert replacing(own, first, "; other score, thre") in capsys.readouterr().out
    earlier = json.loads(own.read_text())
    last = test_script.main(evaluate_argv(run, cache, "--output", str(own), "--checkpoint", str(run / "last.pt")))
    differ = ["checkpoint"] + ["checkpoint_epoch"] * (last["checkpoint_epoch"] != earlier["checkpoint_epoch"])
    assert replacing(own, earlier, "; other " + ", ".join(differ + ["score", "thre"])) in capsys.readouterr().out

    # a test_results.json of an earlier version, whose checkpoint is relative (to a folder not recorded), names
    # the same checkpoint when it is the end of the path evaluated now
    earlier = json.loads(out.read_text())
    out.write_text(json.dumps({**earlier, "checkpoint": f"{run.name}/best.pt"}))
    test_script.main(evaluate_argv(run, cache, "--thre", "0.3"))
    assert replacing(out, earlier) in capsys.readouterr().out
    out.write_text(json.dumps({**earlier, "checkpoint": "elsewhere/best.pt"}))
    test_script.main(evaluate_argv(run, cache, "--thre", "0.3"))
    assert replacing(out, earlier, "; other checkpoint") in capsys.readouterr().out


def test_a_prompt_run_evaluated_again_says_it_replaces_the_earlier_results(tmp_path, tiny_vit_checkpoint, capsys):
    data, cache, run = tmp_path / "data", tmp_path / "cache", tmp_path / "run"
    write_lmpt_dataset(data)
    train_script.main(train_argv(data, tiny_vit_checkpoint, run, cache, epochs=2))
    capsys.readouterr()
    check_replacing(run, cache, capsys)


def test_a_finetuning_run_evaluated_again_says_it_replaces_the_earlier_results(tmp_path, tiny_vit_checkpoint,
                                                                               capsys):
    data, cache, run = tmp_path / "data", tmp_path / "cache", tmp_path / "run"
    write_lmpt_dataset(data)
    fc_script.main(["--dataset", "voc-lt", "--data_root", str(data), "--pretrain_clip_path", str(tiny_vit_checkpoint),
                    "--batch_size", "8", "--epochs", "2", "--device", "cpu", "--num_workers", "0",
                    "--cache_dir", str(cache), "--output_dir", str(run)])
    capsys.readouterr()
    check_replacing(run, cache, capsys)
