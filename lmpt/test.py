"""Evaluate trained LMPT/CoOp prompts, or a classifier of finetune_clip/fc.py, on the test split.

    python lmpt/test.py --checkpoint runs/voc-lt_lmpt_ViT16_seed0 --thre 0.3
    python lmpt/test.py --checkpoint runs/voc-lt_linear-probe_ViT16_seed0 --thre 0.3

Without --checkpoint the run folder that lmpt/train.py (finetune_clip/fc.py, for
--training_method linear-probe or finetune-full) would have written for the same
--dataset/--training_method/--pretrain_clip/--seed is used, so the published
test command works as it is. The prompt learner is rebuilt from the configuration
saved in the checkpoint; prompt flags, --pretrain_clip and --training_method written here
with another value are ignored with a note.
"""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from lmpt.cli import (DATASET_HELP, add_common_args, backbone_help, default_run_dir,  # noqa: E402
                      freeze_imported_objects, given_flags, int_in, report_errors, resolve_backbone_arg,
                      runs_on_other_backbones, script_parser, str2bool)
from lmpt.data import DEFAULT_DATASET  # noqa: E402
from lmpt.models import CLASS_TOKEN_POSITIONS, CONTEXT_LENGTH  # noqa: E402
from lmpt.evaluation import evaluate_run  # noqa: E402
from lmpt.methods import FINETUNE_METHODS, PROMPT_METHODS, TRAINING_SCRIPT  # noqa: E402

SCRIPT_DIR = Path(__file__).resolve().parent


def build_parser():
    p = script_parser(__doc__)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="a run folder (uses best.pt) or a .pt file (default: the run folder lmpt/train.py, or "
                        "finetune_clip/fc.py, writes for the same --dataset, --training_method, --pretrain_clip and "
                        "--seed)")
    p.add_argument("--dataset", default=None, help=DATASET_HELP + "; default: the checkpoint's")
    p.add_argument("--output", type=Path, default=None, help="results file (default: <run>/test_results.json)")
    p.add_argument("--topk", type=int_in(1), default=5,
                   help="k of the top-k precision/recall/F1, as zero_shot_clip/test.py reports them")
    # The published test command's flags: accepted (with train.py's types and choices), and checked against the
    # checkpoint; the prompt flags default to None, which is the checkpoint's value.
    p.add_argument("--pretrain_clip", "--pretrain_clip_path", dest="pretrain_clip", default="ViT16",
                   help=f"{backbone_help()}: the training run's, which names its default folder (the checkpoint "
                        f"holds the CLIP file; --pretrain_clip_path is the same flag)")
    p.add_argument("--training_method", choices=PROMPT_METHODS + FINETUNE_METHODS, default="lmpt",
                   help="the training run's method, which names its default folder (linear-probe and "
                        "finetune-full: the runs of finetune_clip/fc.py, without and with --from_scratch)")
    checked = "checked against the checkpoint's, which rebuilds the prompts (default: the checkpoint's)"
    p.add_argument("--class_token_position", choices=CLASS_TOKEN_POSITIONS, default=None, help=checked)
    p.add_argument("--ctx_init", default=None, help=checked)
    p.add_argument("--n_ctx", type=int_in(1, CONTEXT_LENGTH - 2), default=None, help=checked)
    p.add_argument("--csc", type=str2bool, nargs="?", const=True, default=None, help=checked)
    p.add_argument("--no-csc", dest="csc", action="store_false", help="--csc false: " + checked)
    add_common_args(p, seed_help="the training run's seed, which names its default folder only (the evaluation "
                                 "draws nothing at random)", of_run=True)
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    args.given = given_flags(parser, argv)  # flags written, compared with the checkpoint's
    args.pretrain_clip = resolve_backbone_arg(args.pretrain_clip, SCRIPT_DIR)  # as train.py records it
    if args.checkpoint is None:
        args.checkpoint = default_run_dir(args.dataset or DEFAULT_DATASET, args.training_method, args.pretrain_clip,
                                          args.seed)
        args.default_checkpoint = True
    return args


def check_default_run(args):
    """A default run folder (no --checkpoint) that does not exist is refused naming the script that writes it
    and the runs of the same dataset, method and seed on other backbones, if any."""
    if not getattr(args, "default_checkpoint", False) or args.checkpoint.exists():
        return
    dataset = args.dataset or DEFAULT_DATASET
    writer = TRAINING_SCRIPT[args.training_method]
    others = runs_on_other_backbones(dataset, args.training_method, args.seed)
    raise FileNotFoundError(
        f"{args.checkpoint}: no run here (the default run folder of {writer} for --training_method "
        f"{args.training_method}, --dataset {dataset}, --pretrain_clip {args.pretrain_clip}, --seed {args.seed}); "
        + (f"runs of that dataset, method and seed on other backbones: {', '.join(str(o) for o in others)}; "
           f"pass one with --checkpoint" if others else "pass the run folder with --checkpoint"))


def main(argv=None):
    freeze_imported_objects()
    args = parse_args(argv)
    check_default_run(args)
    return evaluate_run(args)


if __name__ == "__main__":
    report_errors(main)
