"""Train LMPT (or CoOp) prompts on a frozen CLIP.

    python lmpt/train.py --dataset voc-lt --pretrain_clip ViT16 --training_method lmpt ...

See README.md for the published command line; every flag is described by --help.
"""
import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the repository's packages, not this folder's files
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from lmpt.cli import (DATASET_HELP, add_common_args, add_run_args, backbone_help, float_in,  # noqa: E402
                      freeze_imported_objects, given_flags, int_in, positive_float, report_errors,
                      resolve_backbone_arg, resolve_run_dir, restore_run_args, run_resumable, str2bool, unit_float)
from lmpt.engine import OPTIMIZERS  # noqa: E402
from lmpt.losses import (CLASSIFICATION_LOSSES, CSE_LOSSES, DEFAULT_CSE_GAMMA, DEFAULT_CSE_MARGIN,  # noqa: E402
                         DEFAULT_M_CTX)
from lmpt.models import CLASS_TOKEN_POSITIONS, CONTEXT_LENGTH  # noqa: E402
from lmpt.prompt_tuning import CAPTION_LOSS_FLAGS, CAPTION_METHODS, TRAINING_METHODS, train  # noqa: E402

SCRIPT_DIR = Path(__file__).resolve().parent


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="voc-lt", help=DATASET_HELP)
    p.add_argument("--pretrain_clip", default="ViT16", help=backbone_help())
    p.add_argument("--epochs", type=int_in(1), default=50)
    p.add_argument("--class_token_position", choices=CLASS_TOKEN_POSITIONS, default="end")
    p.add_argument("--ctx_init", default="",
                   help="initial context words, '_' for a space ('' = random, --n_ctx vectors)")
    p.add_argument("--n_ctx", type=int_in(1), default=16, help="context vectors when --ctx_init is empty")
    p.add_argument("--m_ctx", type=int_in(0, CONTEXT_LENGTH - 1), default=DEFAULT_M_CTX,
                   help="token offset between caption and prompt in the embedding loss")
    p.add_argument("--csc", type=str2bool, nargs="?", const=True, default=True,
                   help="class-specific contexts (default on; --csc false or --no-csc for one shared context)")
    p.add_argument("--no-csc", dest="csc", action="store_false")
    p.add_argument("--training_method", choices=TRAINING_METHODS, default="lmpt")
    p.add_argument("--lr", type=positive_float, default=5e-4)
    p.add_argument("--loss_function", choices=CLASSIFICATION_LOSSES, default="dbl")
    p.add_argument("--cseloss", choices=CSE_LOSSES, default="softmargin")
    p.add_argument("--cse_margin", type=float_in(0), default=DEFAULT_CSE_MARGIN, help="Δ of the embedding loss")
    p.add_argument("--cse_gamma", type=float_in(), default=DEFAULT_CSE_GAMMA, help="γ of the class weights n_c^-γ")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    p.add_argument("--neg_scale", type=positive_float, default=None,
                   help="λ of the DB loss's negative-tolerant regularisation (default per dataset)")
    p.add_argument("--gamma", type=float_in(), default=None,
                   help="μ of the DB loss's re-balancing weights (default per dataset)")
    p.add_argument("--lam", type=unit_float, default=0.5, help="L = lam·L_cls + (1 − lam)·L_cse, lam in [0, 1]")
    add_run_args(p, "<dataset>_<method>_<backbone>_seed<seed>")
    add_common_args(p)
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    args.pretrain_clip = resolve_backbone_arg(args.pretrain_clip, SCRIPT_DIR)  # a path: made absolute
    args = restore_run_args(parser, args, argv)
    if args.training_method not in CAPTION_METHODS:
        given = given_flags(parser, argv)
        unused = [f"--{key}" for key in CAPTION_LOSS_FLAGS if key in given]
        if unused:
            print(f"[train] note: --training_method {args.training_method} trains without the embedding loss; "
                  f"{', '.join(unused)} {'has' if len(unused) == 1 else 'have'} no effect")
    return resolve_run_dir(args, args.training_method, args.pretrain_clip)


def run(args):
    """Train; on Ctrl-C or SIGTERM say how to resume and exit with status 130."""
    return run_resumable(train, args, "train")


def main(argv=None):
    freeze_imported_objects()
    return run(parse_args(argv))


if __name__ == "__main__":
    report_errors(main)
