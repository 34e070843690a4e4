"""The speed benchmark (tools/benchmark_speed.py) at a toy size: the published loop and ours learn the
same prompts, the published CSE computation equals ours, and the script runs end to end."""
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import benchmark_speed as bench  # noqa: E402
from lmpt import provenance  # noqa: E402
from lmpt.published_loop import published_caption_distance  # noqa: E402

TOY = bench.PRESETS["toy"]


@pytest.fixture(scope="module")
def toy_setup(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench")
    data = bench.make_benchmark_data(work / "data", TOY["num_classes"], TOY["n_train"], TOY["n_test"],
                                     TOY["image_size"], processes=1)
    checkpoint = bench.write_random_clip(work / "pretrained" / "clip.pt", TOY["model"])
    return work, data, checkpoint


def toy_argv(work, data, checkpoint, name):
    return bench.train_argv(data.parent, checkpoint, work / f"run_{name}", work / f"cache_{name}", TOY["epochs"],
                            TOY["batch_size"], "cpu", 0)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("margin", [None, 1.3])  # None: the default Δ, whose hinges random inputs leave at zero
def test_published_cse_equals_ours(dtype, tol, margin):
    captions, prompts, targets, freq = bench.cse_inputs(6, 5, 77, 16, "cpu", seed=3)
    captions, prompts = captions.to(dtype), prompts.detach().to(dtype).requires_grad_()
    targets[0] = 1  # a row with every class positive and one with none: both branches of the loss
    targets[1] = 0
    if margin is not None:  # Δ 1.3 against distances near 1: some negatives' hinges are active, some not
        d = published_caption_distance(captions, prompts, 2)  # [B, C]
        n = torch.tensor(freq, dtype=dtype)
        hinge = (margin * (n.min() / n) ** 0.25 - d) * (1 - targets)  # [B, C], > 0 where active
        assert (hinge > 0).any() and ((hinge <= 0) & (targets == 0)).any()
    loss_p, grad_p = bench.cse_step("published", captions, prompts, targets, freq, m_ctx=2, margin=margin)
    loss_o, grad_o = bench.cse_step("ours", captions, prompts, targets, freq, m_ctx=2, margin=margin)
    assert loss_p.item() > 0
    assert abs(loss_p.item() - loss_o.item()) <= tol * abs(loss_o.item())
    assert grad_o.abs().max() > 0
    torch.testing.assert_close(grad_p, grad_o, rtol=tol, atol=tol * grad_o.abs().max().item())


def test_live_tensor_bytes_counts_what_is_alive_at_once():
    known = torch.zeros(1000)
    with bench.LiveTensorBytes(known) as live:
        a = torch.empty(1000)  # 4000 bytes
        b = torch.empty(500)  # + 2000
        del a, b
        c = known + 1  # 4000 again: the peak stays 6000
        _ = known[:10]  # a view of a known tensor is not new memory
    assert live.peak == 6000
    assert live.current == 4000 and c.numel() == 1000


def test_our_cse_keeps_far_fewer_tensors_alive_than_the_published_one():
    # At B=16, C=20, T=75, D=32 the published [B, C, T, D] product alone is 7.3 MiB; ours holds about the
    # normalised captions [B, T, D] and the gradient [C, L, D] (0.15 + 0.19 MiB).
    peaks = {}
    for kind in ("published", "ours"):
        inputs = bench.cse_inputs(16, 20, 77, 32, "cpu")
        with bench.LiveTensorBytes(*inputs) as live:
            bench.cse_step(kind, *inputs, 2)
        peaks[kind] = live.peak
    assert peaks["published"] >= 16 * 20 * 75 * 32 * 4
    assert peaks["ours"] <= 1.2 * (16 * 75 * 32 + 20 * 77 * 32) * 4 + 2**16
    assert peaks["published"] / peaks["ours"] > 15


def test_published_distance_is_the_token_mean_of_cosines():
    g = torch.Generator().manual_seed(0)
    cap, pro = torch.randn(3, 10, 4, generator=g, dtype=torch.float64), torch.randn(2, 10, 4, generator=g,
                                                                                    dtype=torch.float64)
    d = published_caption_distance(cap, pro, m_ctx=3)
    for i in range(3):
        for c in range(2):
            cos = [torch.dot(cap[i, t], pro[c, t + 3]) / (cap[i, t].norm() * pro[c, t + 3].norm()) for t in range(7)]
            assert d[i, c].item() == pytest.approx(1 - sum(cos).item() / 7, rel=1e-12)


def test_published_loop_and_ours_learn_the_same_prompts(toy_setup):
    work, data, checkpoint = toy_setup
    a = bench.run_published(toy_argv(work, data, checkpoint, "a"))
    b = bench.run_ours(toy_argv(work, data, checkpoint, "b"))
    same = bench.check_same_prompts(a["ctx"], b["ctx"], a["init_ctx"])
    assert same["max_abs_moved"] > 0  # training moved the contexts ...
    assert same["passed"], same  # ... and both loops moved them alike
    assert a["mAP"] == pytest.approx(b["mAP"], abs=1e-3)
    # Control: other batches and flips (another epoch_plan seed) must fail the same check.
    other = bench.run_published(toy_argv(work, data, checkpoint, "c"), plan_seed=1)
    control = bench.check_same_prompts(other["ctx"], b["ctx"], other["init_ctx"])
    assert torch.equal(other["init_ctx"], a["init_ctx"])
    assert not control["passed"] and control["rel_diff"] > 100 * same["rel_diff"], control


def test_benchmark_script_runs_end_to_end(tmp_path):
    """(a) cut to 1 of 2 epochs: its time is extrapolated and the prompts are compared on a separate pair."""
    out = tmp_path / "report.json"
    printed = bench.main(["--preset", "toy", "--a_epochs", "1", "--threads", "1", "--work_dir",
                          str(tmp_path / "work"), "--out", str(out), "--eval_workers", "1"])
    report = json.loads(out.read_text())
    assert report["wall_ratio"] == pytest.approx(printed["wall_ratio"])
    a, b = report["a"], report["b"]
    assert a["extrapolated"] and a["epochs_measured"] == 1 and b["epochs"] == TOY["epochs"]
    per_epoch = a["train_seconds_per_epoch"] + a["eval_seconds_per_epoch"]
    assert a["epoch_seconds"] == [pytest.approx(per_epoch)]
    assert a["seconds"] == pytest.approx(a["setup_seconds"] + TOY["epochs"] * per_epoch)  # one epoch: its rate
    assert report["wall_ratio"] == pytest.approx(a["seconds"] / b["seconds"])
    assert report["prompts"]["passed"] and report["prompts"]["source"].startswith("a separate fp32 CPU pair")
    assert report["cse"]["loss_abs_diff"] <= 1e-5 * report["cse"]["ours"]["loss"]
    assert report["cse"]["live_tensor_ratio"] > 1
    evaluation = report["eval"]
    assert evaluation["images"] == TOY["eval_images"] and evaluation["decode_limit_images_per_s"] > 0
    assert evaluation["num_workers"] == TOY["num_workers"] and set(evaluation["decode_limit_by_workers"]) >= {"0", "1"}
    runs = [evaluation[script] for script in ("zero_shot", "test")] + list(evaluation["other_workers"]["1"].values())
    for e in runs:  # each script encoded the images into its own, empty cache, twice with each worker count
        assert e["ratio"] == pytest.approx(e["images_per_s"] / evaluation["decode_limit_images_per_s"])
        assert len(e["seconds_each"]) == 2 and e["seconds"] == min(e["seconds_each"])
        assert min(e["before_decoding"], e["decoding"], e["after"]) > 0
        assert e["before_decoding"] + e["decoding"] + e["after"] == pytest.approx(e["seconds"])
        assert 0 < e["model_build"] < e["decoding"]
        assert e["main_cpu_seconds"] > 0 and 0 <= e["workers_shutdown_seconds"] < e["decoding"]
    # the CPU of the loader workers is counted apart, and only where there are workers
    assert TOY["num_workers"] == 0 and evaluation["zero_shot"]["workers_cpu_seconds"] == 0
    assert min(e["workers_cpu_seconds"] for e in evaluation["other_workers"]["1"].values()) > 0
    limit_cpu = evaluation["decode_limit_cpu_by_workers"]
    assert limit_cpu["0"]["workers_cpu_seconds"] == 0 < limit_cpu["1"]["workers_cpu_seconds"]
    assert min(cpu["main_cpu_seconds"] for cpu in limit_cpu.values()) > 0
    # only loaders with workers shut them down
    assert limit_cpu["0"]["workers_shutdown_seconds"] == 0 < limit_cpu["1"]["workers_shutdown_seconds"]
    assert min(e["workers_shutdown_seconds"] for e in evaluation["other_workers"]["1"].values()) > 0
    for script in ("zero_shot", "test"):
        assert len(list((tmp_path / "work" / f"eval_cache_{script}").glob("*.pt"))) == 1
    assert json.loads((tmp_path / "work" / "eval_test.json").read_text())["mAP"] >= 0
    assert report["memory_ratio"] > 0
    assert report["code"] == provenance.code_version()  # the commit measured, as this checkout's


def test_an_extrapolated_published_loop_counts_its_first_epochs_start_up_once():
    a = {"train_seconds": [9.0, 4.0, 4.5], "eval_seconds": [3.0, 2.0, 1.5], "setup_seconds": 1.0, "seconds": 25.0,
         "precision": "fp16", "peak_memory_bytes": 2, "rss_after_imports_bytes": 1}
    b = {"seconds": 2.0, "epoch_seconds": [0.1] * 10, "peak_memory_bytes": 1, "rss_after_imports_bytes": 1,
         "children_peak_rss_bytes": 1}
    pair = bench.summarise_pair(a, b, epochs=10)
    assert pair["a"]["seconds"] == pytest.approx(1.0 + 12.0 + 9 * 6.0)  # setup + first epoch + 9 later ones
    assert pair["wall_ratio"] == pytest.approx(pair["a"]["seconds"] / 2.0) and pair["a"]["extrapolated"]
    assert bench.summarise_pair(a, b, epochs=3)["a"]["seconds"] == 25.0  # all measured: the measured time


def test_only_runs_the_parts_asked_for(tmp_path):
    report = bench.main(["--preset", "toy", "--only", "cse", "--threads", "1", "--out", str(tmp_path / "r.json")])
    assert report["parts"] == ["cse"] and "cse" in report
    assert "a" not in report and "eval" not in report and "prompts" not in report
    assert report["cse"]["live_tensor_ratio"] > 1
    with pytest.raises(SystemExit, match="subset of pair, cse, eval"):
        bench.main(["--preset", "toy", "--only", "cse,speed", "--out", str(tmp_path / "r2.json")])
    for bad in ("15,many", "-1"):
        with pytest.raises(SystemExit, match="--eval_workers"):
            bench.main(["--preset", "toy", "--only", "eval", "--eval_workers", bad, "--out", str(tmp_path / "r3.json")])


def test_work_dir_of_other_files_is_refused_and_kept(tmp_path):
    precious = tmp_path / "notes.txt"
    precious.write_text("not the benchmark's")
    with pytest.raises(SystemExit, match="did not write"):
        bench.main(["--preset", "toy", "--work_dir", str(tmp_path), "--out", str(tmp_path / "r.json")])
    assert precious.read_text() == "not the benchmark's"


def test_the_cpu_is_named_by_its_first_processors_model_and_bf16_features():
    block = ("processor\t: {n}\nmodel name\t: {name}\nflags\t\t: fpu sse2 avx2 {flags}\n\n")
    cpuinfo = (block.format(n=0, name="Intel(R) Xeon(R) Processor", flags="avx512f avx512_bf16 amx_bf16")
               + block.format(n=1, name="Other", flags=""))
    assert provenance.cpu_model(cpuinfo) == "Intel(R) Xeon(R) Processor, AVX-512 BF16, AMX BF16"
    assert provenance.cpu_model(block.format(n=0, name="AMD EPYC 7B13", flags="avx2")) == "AMD EPYC 7B13"
    assert provenance.cpu_model("processor\t: 0\nflags\t\t: avx512_bf16\n") is None  # no model name (e.g. ARM)
