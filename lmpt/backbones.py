"""Backbones: the names ``--pretrain_clip`` knows, their checkpoint files, and the identity (name, file,
sha256) that a run records of the CLIP it was trained on and checks before it is resumed or tested."""
import os
import sys
from pathlib import Path

import clip
from clip.clip import PRETRAINED_DIR_ENV

from .fileid import file_fingerprint

TINY_CHECKPOINT = "tiny-clip-synth.pt"  # the embedded default, pretrained by tools/pretrain_tiny_clip.py
CHECKPOINT_SUFFIXES = (".pt", ".pth")  # a name with one is meant as a file

# --pretrain_clip short names (the published ones first) -> OpenAI's model names, whose files clip.model_file
# names, or a file name in the pretrained folder (a checkpoint of your own: one entry here).
BACKBONES = {
    "RN50": "RN50",
    "RN101": "RN101",
    "RN50x4": "RN50x4",
    "RN50x16": "RN50x16",
    "RN50x64": "RN50x64",
    "ViT32": "ViT-B/32",
    "ViT16": "ViT-B/16",
    "ViT14": "ViT-L/14",
    "ViT14@336": "ViT-L/14@336px",
    "tiny": TINY_CHECKPOINT,
}


def is_backbone_name(name):
    """A short name of :data:`BACKBONES` or an OpenAI name (``ViT-B/16``), not a path."""
    return name in BACKBONES or name in clip.available_models()


def backbone_file(name):
    """A backbone name's checkpoint file in the pretrained folder: ``ViT16`` and ``ViT-B/16`` -> ``ViT-B-16.pt``,
    ``tiny`` -> ``tiny-clip-synth.pt``."""
    target = BACKBONES.get(name, name)
    return target if target.endswith(CHECKPOINT_SUFFIXES) else clip.model_file(target)


def backbone_tag(backbone):
    """A backbone's part of a default run folder's name: a name by its short name (``ViT-B/16`` and
    ``ViT16`` are both ``ViT16``, so train.py and test.py agree whichever was typed); a path to the file of a
    short name by that name (``../pretrained/ViT-B-16.pt``, as the published fine-tune and zero-shot
    commands pass it, is ``ViT16`` too); another path by its file's stem (``my-clip``)."""
    if is_backbone_name(backbone):
        return next((short for short, name in BACKBONES.items() if backbone in (short, name)), backbone)
    name = Path(backbone).name
    return next((short for short in BACKBONES if backbone_file(short) == name), Path(backbone).stem)


def same_backbone(a, b, pretrained_dir=None):
    """Whether two ``--pretrain_clip`` values name one backbone: equal, two names of it (``ViT-B/16`` and
    ``ViT16``), or a name and a path, or two paths, of one file (``RN50`` and ``../pretrained/RN50.pt``, with
    names looked up in ``pretrained_dir``). Two files are never one backbone by their names alone: a fine-tuned
    CLIP saved as ``RN50.pt`` elsewhere is another."""
    if a == b:
        return True
    if is_backbone_name(a) and is_backbone_name(b):
        return backbone_tag(a) == backbone_tag(b)
    try:
        return os.path.samefile(resolve_backbone(a, pretrained_dir), resolve_backbone(b, pretrained_dir))
    except (OSError, ValueError):  # one of them names no file here: not known to be the same
        return False


REPO_ROOT = Path(__file__).resolve().parents[1]
# the folders of the scripts that take a checkpoint path: paths.resolve_user_path looks for a relative path from
# the current folder, then from the script's own folder (the published README wrote '../pretrained/RN50.pt')
SCRIPT_DIRS = tuple(REPO_ROOT / folder for folder in ("lmpt", "zero_shot_clip", "finetune_clip"))


def script_dirs():
    """The folder of the repository's script run (``sys.argv[0]``), else (the library called from elsewhere) all
    of :data:`SCRIPT_DIRS`."""
    running = Path(sys.argv[0] or ".").resolve().parent
    return (running,) if running in SCRIPT_DIRS else SCRIPT_DIRS


def paths_tried(path):
    """Every file a checkpoint path not found was looked for at, in words: itself when absolute; a relative one
    from the current folder, then from the script's folder."""
    if path.is_absolute():
        return str(path)
    tried = dict.fromkeys(str(p.resolve()) for p in (path, *(folder / path for folder in script_dirs())))
    return (f"{' or '.join(tried)} (the scripts look for a relative path from the current folder, then from the "
            f"script's own folder)")


def resolve_backbone(name, pretrained_dir=None):
    """A short name of :data:`BACKBONES`, an OpenAI name (``ViT-B/16``) or a path -> the checkpoint file,
    which must exist (FileNotFoundError naming the file and where to put it otherwise). Names are looked
    up in ``pretrained_dir`` (default: ``$LMPT_PRETRAINED_DIR``, else the repository's ``pretrained/``)."""
    if is_backbone_name(name):
        file = backbone_file(name)
        path = clip.pretrained_dir(pretrained_dir) / file
        if not path.is_file():
            if name == "tiny":
                how = "build it with `python tools/pretrain_tiny_clip.py` (bash tools/demo.sh does)"
            elif BACKBONES.get(name, name) in clip.available_models():
                how = f"place OpenAI's released {file} there (nothing is downloaded)"
            else:  # a checkpoint of the user's own, named in BACKBONES
                how = f"place {file} there"
            raise FileNotFoundError(f"backbone {name}: checkpoint {path} not found; {how}, or pass "
                                    f"--pretrained_dir (or set ${PRETRAINED_DIR_ENV}) to the folder "
                                    f"holding it")
        return path
    path = Path(name).expanduser()
    if path.suffix in CHECKPOINT_SUFFIXES or path.exists():
        if not path.is_file():
            where = "there" if path.is_absolute() else "at one of these paths"
            raise FileNotFoundError(f"backbone {name}: no checkpoint file at {paths_tried(path)}; put the CLIP .pt "
                                    f"file {where}, or pass its absolute path or one of the names "
                                    f"{', '.join(BACKBONES)} (files in --pretrained_dir)")
        return path
    raise ValueError(
        f"backbone {name!r}: not a known backbone ({', '.join(BACKBONES)}; "
        f"or an OpenAI name such as ViT-B/16) and not a path to a .pt file")


def backbone_identity(backbone, clip_file):
    """What a run's checkpoint records about the CLIP it was trained on: the name or path as given, the
    file's name and its sha256."""
    return {"backbone": str(backbone), "backbone_file": Path(clip_file).name,
            "backbone_sha256": file_fingerprint(clip_file)}


def find_backbone(name, pretrained_dir, file_name=None):
    """``resolve_backbone``; failing that (a file moved since a run was trained), the run's CLIP file
    name ``file_name`` in ``pretrained_dir``. ``check_backbone`` then compares its sha256."""
    try:
        return resolve_backbone(name, pretrained_dir)
    except (FileNotFoundError, ValueError):
        moved = clip.pretrained_dir(pretrained_dir) / (file_name or "")
        if file_name and moved.is_file():
            return moved
        raise


def check_backbone(config, clip_file, source):
    """Refuse to evaluate or resume a run (``source``: its checkpoint) on a CLIP other than the one it was
    trained on (``config``: the run's configuration, with ``backbone_identity``)."""
    sha = file_fingerprint(clip_file)
    if config.get("backbone_sha256") not in (None, sha):
        raise ValueError(
            f"{source}: trained on backbone {config.get('backbone')} ({config.get('backbone_file')}, "
            f"sha256 {config['backbone_sha256'][:12]}…) but {clip_file} has sha256 {sha[:12]}…; put the "
            f"original file back, or pass --pretrained_dir holding it")
