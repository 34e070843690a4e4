"""Fine-tuned CLIP baseline: a linear probe on the frozen visual embedding, or full
fine-tuning of the visual encoder with --from_scratch (the published flag name).

    python finetune_clip/fc.py --dataset voc-lt --nb_classes 20 --pretrain_clip_path ../pretrained/ViT-B-16.pt
"""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from lmpt.baselines import finetune  # noqa: E402
from lmpt.methods import finetune_method  # noqa: E402
from lmpt.cli import (add_baseline_args, add_common_args, add_db_loss_args, add_run_args, db_flag_note,  # noqa: E402
                      freeze_imported_objects, given_flags, int_in, positive_float, resolve_run_dir, report_errors,
                      restore_run_args, resolve_backbone_arg, run_resumable, script_parser)
from lmpt.losses import CLASSIFICATION_LOSSES  # noqa: E402

SCRIPT_DIR = Path(__file__).resolve().parent


def build_parser():
    p = script_parser(__doc__)
    add_baseline_args(p, "ViT16")
    p.add_argument("--from_scratch", action="store_true", help="also train the visual encoder (full fine-tuning)")
    p.add_argument("--epochs", type=int_in(1), default=50, help="training epochs")
    p.add_argument("--lr", type=positive_float, default=1e-4, help="learning rate (AdamW)")
    p.add_argument("--loss_function", choices=CLASSIFICATION_LOSSES, default="dbl", help="classification loss")
    add_db_loss_args(p)
    add_run_args(p, "<dataset>_<linear-probe|finetune-full>_<backbone>_seed<seed>")
    add_common_args(p)
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    args.pretrain_clip_path = resolve_backbone_arg(args.pretrain_clip_path, SCRIPT_DIR)
    args = restore_run_args(parser, args, argv)
    note = db_flag_note(args, given_flags(parser, argv))
    if note:
        print(f"[finetune] note: {note}")
    return resolve_run_dir(args, finetune_method(args.from_scratch), args.pretrain_clip_path)


def main(argv=None):
    freeze_imported_objects()
    return run_resumable(finetune, parse_args(argv), "finetune")


if __name__ == "__main__":
    report_errors(main)
