"""Command-line pieces shared by the scripts (train, test, zero-shot, fine-tune)."""
import argparse
import os
from pathlib import Path

from .data import DEFAULT_DATA_ROOT, REPO_ROOT
from .models import DEFAULT_PRETRAINED_DIR


def str2bool(value):
    if isinstance(value, bool):
        return value
    if value.lower() in ("1", "true", "yes", "y", "on"):
        return True
    if value.lower() in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


def default_workers():
    return min(8, os.cpu_count() or 1)


def add_common_args(parser):
    """Flags every script takes: data, device, loader, scoring and caching."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--data_root", type=Path, default=DEFAULT_DATA_ROOT,
                        help="folder holding voc/, coco/, synth/ (default: data/ of the repository)")
    parser.add_argument("--pretrained_dir", type=Path, default=DEFAULT_PRETRAINED_DIR,
                        help="folder of the CLIP checkpoints (default: pretrained/ of the repository)")
    parser.add_argument("--num_workers", type=int, default=default_workers(),
                        help="image-decoding worker processes")
    parser.add_argument("--score", choices=("softmax", "sigmoid"), default="softmax",
                        help="scores ranked and thresholded: softmax over classes (published) or sigmoid")
    parser.add_argument("--thre", type=float, default=0.5, help="threshold for CP/CR/CF1/OP/OR/OF1")
    parser.add_argument("--preprocess", choices=("lmpt", "clip"), default="lmpt",
                        help="lmpt: squash to the input size, ImageNet mean/std (published); "
                             "clip: CLIP's resize + centre crop")
    parser.add_argument("--cache_dir", type=Path, default=None,
                        help="image-feature cache (default: .cache/features of the repository)")
    parser.add_argument("--skip_bad_images", action="store_true",
                        help="drop unreadable images with a report instead of refusing to run")
    return parser


def resolve_user_path(path, script_dir):
    """A path as the user wrote it: relative to the current folder, or — as the published
    README wrote them, for scripts run from their own folder — relative to the script's folder."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    beside_script = Path(script_dir) / path
    if beside_script.exists():
        return beside_script.resolve()
    return path


def default_run_dir(*parts):
    """runs/<dataset>_<method>_<backbone>_seed<seed> under the repository."""
    name = "_".join(str(p).replace("/", "-").replace(os.sep, "-") for p in parts)
    return REPO_ROOT / "runs" / name
