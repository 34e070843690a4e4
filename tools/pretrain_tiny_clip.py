"""Pretrain the tiny CLIP on the synthetic corpus and report its zero-shot mAP on synth-lt.

    .venv/bin/python tools/pretrain_tiny_clip.py            # default: pretrained/tiny-clip-synth.pt
    .venv/bin/python tools/pretrain_tiny_clip.py --fast     # the tests' reduced setting: tiny-clip-synth-fast.pt
    .venv/bin/python tools/pretrain_tiny_clip.py --eval_only --probe   # evaluate an existing checkpoint

Prints zero-shot mAP (softmax over classes, 'a photo of a {name}.'), chance (the
positive rate of the test split) and, with --probe, a BCE logistic probe on frozen features (a quick
check, not finetune_clip/fc.py's linear probe).
"""
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clip.clip import pretrained_dir  # noqa: E402
from lmpt.backbones import TINY_CHECKPOINT  # noqa: E402
from lmpt.cli import printable_output, script_parser  # noqa: E402
from lmpt.pretrain import (DEFAULT_SETTINGS, FAST_CHECKPOINT_NAME, FAST_SETTINGS,  # noqa: E402
                           bce_probe_map, pretrain_tiny_clip, pretraining_locked, resolved_bf16, zero_shot_map)


def main(argv=None):
    p = script_parser(__doc__)
    p.add_argument("--out", type=Path, default=None,
                   help=f"checkpoint to write (default: {TINY_CHECKPOINT}, with --fast {FAST_CHECKPOINT_NAME}, in "
                        f"$LMPT_PRETRAINED_DIR, else pretrained/)")
    p.add_argument("--fast", action="store_true", help="the reduced setting (small corpus, few steps)")
    for name in ("steps", "batch_size", "corpus_size", "warmup_steps", "seed"):
        p.add_argument(f"--{name}", type=int, default=None, help=f"default {DEFAULT_SETTINGS[name]}")
    p.add_argument("--lr", type=float, default=None, help=f"default {DEFAULT_SETTINGS['lr']}")
    p.add_argument("--weight_decay", type=float, default=None, help=f"default {DEFAULT_SETTINGS['weight_decay']}")
    p.add_argument("--no_bf16", action="store_true",
                   help="train in fp32 (default: bf16 autocast where the CPU has it natively, AVX-512 or AMX)")
    p.add_argument("--data_root", type=Path, default=ROOT / "data", help="where synth/ is (generated if absent)")
    p.add_argument("--eval_only", action="store_true", help="evaluate --out without pretraining")
    p.add_argument("--probe", action="store_true", help="also report a BCE logistic probe on frozen features")
    args = p.parse_args(argv)
    if args.out is None:  # --fast never replaces the demo's tiny CLIP
        args.out = pretrained_dir() / (FAST_CHECKPOINT_NAME if args.fast else TINY_CHECKPOINT)

    import clip
    from lmpt.data import load_dataset
    from lmpt.synthetic import ensure_benchmark

    if not args.eval_only:
        settings = dict(FAST_SETTINGS if args.fast else DEFAULT_SETTINGS)
        settings.update({k: getattr(args, k) for k in settings if getattr(args, k, None) is not None})
        settings["bf16"] = False if args.no_bf16 else resolved_bf16(None)
        print(f"[pretrain] settings {settings} -> {args.out}", flush=True)
        t0 = time.time()
        with pretraining_locked(args.out.parent):  # one at a time, as ensure_tiny_clip
            _, info = pretrain_tiny_clip(args.out, log=lambda m: print(m, flush=True), **settings)
        print(f"[pretrain] done in {time.time() - t0:.0f}s (corpus {info['corpus_seconds']}s, "
              f"training {info['train_seconds']}s); loss {info['first_loss']:.3f} -> {info['final_loss']:.3f}")
    elif not args.out.is_file():
        p.error(f"--eval_only: {args.out} does not exist; pretrain it first (without --eval_only)")

    ensure_benchmark(args.data_root)
    dataset = load_dataset("synth-lt", args.data_root)
    model, _ = clip.load(str(args.out), device="cpu")
    chance = float(dataset.test_labels.mean())
    print(f"[eval] {args.out.name} on synth-lt test ({len(dataset.test_paths)} images, {dataset.num_classes} classes)")
    print(f"[eval] chance mAP (positive rate) {100 * chance:.2f}")
    print(f"[eval] zero-shot mAP {100 * zero_shot_map(model, dataset):.2f}")
    if args.probe:
        print(f"[eval] BCE-probe mAP {100 * bce_probe_map(model, dataset):.2f}")


if __name__ == "__main__":
    printable_output()
    main()
