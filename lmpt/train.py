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
from lmpt.losses import (CLASSIFICATION_LOSSES, CSE_LOSS_FLAGS, CSE_LOSSES, DB_LOSS_FLAGS,  # noqa: E402
                         DEFAULT_CSE_GAMMA, DEFAULT_CSE_MARGIN, DEFAULT_M_CTX, db_flags_read)
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
    for note in unused_flag_notes(args, given_flags(parser, argv)):
        print(f"[train] note: {note}")
    return resolve_run_dir(args, args.training_method, args.pretrain_clip)


def unused_flag_notes(args, given):
    """What to say of the flags written on the command line (``given``: their destinations, not those left at
    their defaults) that the run does not read: the embedding loss's under a method without it
    (``CAPTION_LOSS_FLAGS``), those the chosen ``--cseloss`` does not read (``losses.CSE_LOSS_FLAGS``), and μ and
    λ (``losses.DB_LOSS_FLAGS``) where the chosen ``--loss_function`` does not read them (``losses.db_flags_read``:
    the plain losses read neither, and of the Distribution-Balanced family the re-balanced weights alone read μ,
    the negative-tolerant regularisation alone λ). args.json records them as given."""
    def named(keys):
        return f"{', '.join(f'--{key}' for key in keys)} {'has' if len(keys) == 1 else 'have'} no effect"

    def unread(flag, value, read, every, neither=False):
        """The note on the flags of ``every`` given but not in ``read`` (those ``flag value`` reads); None when
        each one given is read."""
        unused = [key for key in every if key in given and key not in read]
        if not unused:
            return None
        if read:
            reads = f"reads {', '.join(f'--{key}' for key in read)} only"
        elif neither and len(every) == 2:
            reads = f"reads neither --{every[0]} nor --{every[1]}"
        else:
            reads = f"reads none of {', '.join(f'--{key}' for key in every)}"
        return (f"{flag} {value} {reads}; {named(unused)} (args.json records {'it' if len(unused) == 1 else 'them'} "
                f"as given, unused)")

    notes = []
    if args.training_method not in CAPTION_METHODS:
        unused = [key for key in CAPTION_LOSS_FLAGS if key in given]
        if unused:
            notes.append(f"--training_method {args.training_method} trains without the embedding loss; "
                         f"{named(unused)}")
    elif args.cseloss in CSE_LOSS_FLAGS:  # a kind without an entry is refused when its loss is built
        every = list(dict.fromkeys(key for keys in CSE_LOSS_FLAGS.values() for key in keys))
        notes.append(unread("--cseloss", args.cseloss, CSE_LOSS_FLAGS[args.cseloss], every))
    notes.append(unread("--loss_function", args.loss_function, db_flags_read(args.loss_function), DB_LOSS_FLAGS,
                        neither=True))
    return [note for note in notes if note]


def run(args):
    """Train; on Ctrl-C or SIGTERM say how to resume and exit with status 130 or 143 (128 + the signal)."""
    return run_resumable(train, args, "train")


def main(argv=None):
    freeze_imported_objects()
    return run(parse_args(argv))


if __name__ == "__main__":
    report_errors(main)
