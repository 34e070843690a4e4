"""Zero-shot CLIP on VOC-LT / COCO-LT (or the embedded synthetic benchmark).

    python zero_shot_clip/test.py --dataset VOC --nb_classes 20 --pretrain_clip_path ../pretrained/RN50.pt
"""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from lmpt.baselines import zero_shot  # noqa: E402
from lmpt.cli import (add_baseline_args, add_common_args, default_output_dir, freeze_imported_objects,  # noqa: E402
                      int_in, report_errors, resolve_backbone_arg, script_parser)
from lmpt.methods import ZERO_SHOT  # noqa: E402
from lmpt.paths import absolute  # noqa: E402
from lmpt.templates import DEFAULT_TEMPLATES, TEMPLATES  # noqa: E402

SCRIPT_DIR = Path(__file__).resolve().parent


def build_parser():
    p = script_parser(__doc__)
    add_baseline_args(p, "RN50")
    p.add_argument("--templates", choices=sorted(TEMPLATES), default=DEFAULT_TEMPLATES,
                   help="the CLIP paper's 80 ImageNet templates, or 'a photo of a {}.'")
    p.add_argument("--topk", type=int_in(1), default=5, help="k of the top-k precision/recall/F1")
    p.add_argument("--output_dir", type=Path, default=None,
                   help="run folder (default: runs/<dataset>_zero-shot_<backbone>_seed<seed>; with other --templates, "
                        "zero-shot-<templates>)")
    p.add_argument("--output", type=Path, default=None,
                   help="results file (default: <run folder>/results.json); another file keeps an earlier "
                        "evaluation, at another --thre say, and leaves the run folder as it is")
    add_common_args(p, seed_help="names the default run folder only: zero-shot draws nothing at random, so every "
                                 "seed gives the same results")
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    args.pretrain_clip_path = resolve_backbone_arg(args.pretrain_clip_path, SCRIPT_DIR)
    args.data_root = absolute(args.data_root)  # args.json names it from any folder
    if args.output is not None:  # the results go there alone: no run folder is written
        args.output = absolute(args.output)
        if args.output_dir is not None:
            print(f"[zero-shot] note: --output {args.output}: the results go there; --output_dir {args.output_dir} "
                  f"is not written")
    elif args.output_dir is None:
        method = ZERO_SHOT if args.templates == DEFAULT_TEMPLATES else f"{ZERO_SHOT}-{args.templates}"  # own folder
        args.output_dir = default_output_dir(args, method, args.pretrain_clip_path)
    return args


def main(argv=None):
    freeze_imported_objects()
    return zero_shot(parse_args(argv))


if __name__ == "__main__":
    report_errors(main)
