"""Train LMPT (or CoOp) prompts on a frozen CLIP.

    python lmpt/train.py --dataset voc-lt --pretrain_clip ViT16 --training_method lmpt ...

See README.md for the published command line; every flag is described by --help.
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the repository's packages, not this folder's files
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from lmpt.cli import (DATASET_HELP, add_common_args, add_db_loss_args, add_run_args, backbone_help,  # noqa: E402
                      db_flag_note, float_in, freeze_imported_objects, given_flags, int_in, no_effect, positive_float,
                      report_errors, resolve_backbone_arg, resolve_run_dir, restore_run_args, run_resumable,
                      script_parser, str2bool, unit_float, unread_flags_note)
from lmpt.data import DEFAULT_DATASET  # noqa: E402
from lmpt.engine import OPTIMIZERS  # noqa: E402
from lmpt.losses import (CLASSIFICATION_LOSSES, CSE_LOSS_FLAGS, CSE_LOSSES, DEFAULT_CSE_GAMMA,  # noqa: E402
                         DEFAULT_CSE_MARGIN, DEFAULT_M_CTX)
from lmpt.methods import CAPTION_METHODS, PROMPT_METHODS  # noqa: E402
from lmpt.models import CLASS_TOKEN_POSITIONS, CONTEXT_LENGTH, context_words, prompt_texts  # noqa: E402
from lmpt.prompt_tuning import train  # noqa: E402
from lmpt.settings import METHOD_ONLY_FLAGS  # noqa: E402

SCRIPT_DIR = Path(__file__).resolve().parent


def build_parser():
    p = script_parser(__doc__)
    p.add_argument("--dataset", default=DEFAULT_DATASET, help=DATASET_HELP)
    p.add_argument("--pretrain_clip", "--pretrain_clip_path", dest="pretrain_clip", default="ViT16",
                   help=f"{backbone_help()} (--pretrain_clip_path, the baselines' name, is the same flag)")
    p.add_argument("--epochs", type=int_in(1), default=50, help="training epochs")
    p.add_argument("--class_token_position", choices=CLASS_TOKEN_POSITIONS, default="end",
                   help="where the class name goes in the prompt")
    p.add_argument("--ctx_init", default="",
                   help="initial context words, '_' for a space; their token count is the number of context "
                        "vectors (default: '', --n_ctx random vectors)")
    p.add_argument("--n_ctx", type=int_in(1, CONTEXT_LENGTH - 2), default=16,
                   help="context vectors when --ctx_init is empty (a prompt holds 77 tokens with its start and end)")
    p.add_argument("--m_ctx", type=int_in(0, CONTEXT_LENGTH - 1), default=DEFAULT_M_CTX,
                   help="token offset between caption and prompt in the embedding loss")
    p.add_argument("--csc", type=str2bool, nargs="?", const=True, default=True,
                   help="class-specific contexts (default on; --csc false or --no-csc for one shared context)")
    p.add_argument("--no-csc", dest="csc", action="store_false", help="one context shared by all classes: --csc false")
    p.add_argument("--training_method", choices=PROMPT_METHODS, default="lmpt",
                   help="lmpt: with the embedding loss on the captions; coop: the classification loss alone "
                        "(the names of lmpt/methods.py's PROMPT_METHODS)")
    p.add_argument("--lr", type=positive_float, default=5e-4, help="learning rate")
    p.add_argument("--loss_function", choices=CLASSIFICATION_LOSSES, default="dbl", help="classification loss")
    p.add_argument("--cseloss", choices=CSE_LOSSES, default="softmargin", help="class-specific embedding loss")
    p.add_argument("--cse_margin", type=float_in(0), default=DEFAULT_CSE_MARGIN, help="Δ of the embedding loss")
    p.add_argument("--cse_gamma", type=float_in(), default=DEFAULT_CSE_GAMMA, help="γ of the class weights n_c^-γ")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd", help="optimiser of the contexts")
    add_db_loss_args(p)
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
    their defaults) that the run does not read: those only other methods read (``settings.METHOD_ONLY_FLAGS``:
    the embedding loss's under a method without it), those the chosen ``--cseloss`` does not read
    (``losses.CSE_LOSS_FLAGS``), μ and λ (``losses.DB_LOSS_FLAGS``) where the chosen ``--loss_function`` does not
    read them (``db_flag_note``), and ``--n_ctx`` beside a non-empty ``--ctx_init``, whose token count is the
    number of context vectors (an ``--n_ctx`` equal to it is not noted). args.json records them as given."""
    notes = []
    for what, keys, methods in METHOD_ONLY_FLAGS:
        unused = [key for key in keys if key in given] if args.training_method not in methods else []
        if unused:
            notes.append(f"--training_method {args.training_method} trains without {what}; {no_effect(unused)}")
    # a --cseloss without an entry in CSE_LOSS_FLAGS is refused when its loss is built
    if args.training_method in CAPTION_METHODS and args.cseloss in CSE_LOSS_FLAGS:
        every = list(dict.fromkeys(key for keys in CSE_LOSS_FLAGS.values() for key in keys))
        notes.append(unread_flags_note(given, "--cseloss", args.cseloss, CSE_LOSS_FLAGS[args.cseloss], every))
    notes.append(db_flag_note(args, given))
    if "n_ctx" in given and context_words(args.ctx_init):
        try:
            n_ctx = prompt_texts([], args.n_ctx, args.ctx_init)[0]
        except ValueError:  # an init without tokens: refused, with why, when the prompts are built
            n_ctx = None
        if n_ctx is not None and n_ctx != args.n_ctx:
            notes.append(f"--ctx_init {args.ctx_init!r} sets the number of context vectors (its {n_ctx} "
                         f"token{'s' if n_ctx != 1 else ''}); --n_ctx {args.n_ctx} has no effect (args.json "
                         f"records it as given, unused)")
    return [note for note in notes if note]


def run(args):
    """Train; on Ctrl-C or SIGTERM say how to resume and exit with status 130 or 143 (128 + the signal)."""
    return run_resumable(train, args, "train")


def main(argv=None):
    freeze_imported_objects()
    return run(parse_args(argv))


if __name__ == "__main__":
    report_errors(main)
