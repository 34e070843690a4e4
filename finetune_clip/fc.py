"""Fine-tuned CLIP baseline: a linear probe on the frozen visual embedding, or full
fine-tuning of the visual encoder with --from_scratch (the published flag name).

    python finetune_clip/fc.py --dataset voc-lt --nb_classes 20 --pretrain_clip_path ../pretrained/ViT-B-16.pt
"""
import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from lmpt.baselines import finetune  # noqa: E402
from lmpt.cli import add_common_args, default_run_dir, resolve_user_path  # noqa: E402
from lmpt.losses import CLASSIFICATION_LOSSES  # noqa: E402

SCRIPT_DIR = Path(__file__).resolve().parent


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="voc-lt", help="VOC / voc-lt, COCO / coco-lt, synth-lt")
    p.add_argument("--nb_classes", type=int, default=None, help="checked against the labels file")
    p.add_argument("--pretrain_clip_path", default="ViT16",
                   help="a checkpoint path (relative paths as in the published README work) or a backbone name")
    p.add_argument("--from_scratch", action="store_true", help="also train the visual encoder (full fine-tuning)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--loss_function", choices=CLASSIFICATION_LOSSES, default="dbl")
    p.add_argument("--val_list", type=Path, default=None,
                   help="list file for model selection (default: the test split, as published)")
    p.add_argument("--output_dir", type=Path, default=None,
                   help="run folder (default: runs/<dataset>_<linear-probe|finetune>_<backbone>_seed<seed>)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --output_dir")
    add_common_args(p)
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    args.pretrain_clip_path = str(resolve_user_path(args.pretrain_clip_path, SCRIPT_DIR))
    if args.resume is not None:
        args.output_dir, args.resume = args.resume, True
    else:
        args.resume = False
    if args.output_dir is None:
        method = "finetune" if args.from_scratch else "linear-probe"
        args.output_dir = default_run_dir(args.dataset, method, Path(args.pretrain_clip_path).stem, f"seed{args.seed}")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        finetune(args)
    except KeyboardInterrupt:
        print(f"\n[finetune] interrupted; continue with --resume {args.output_dir}", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
