"""Paths as the user wrote them: made absolute (``absolute``), or found beside the script that reads them
(``resolve_user_path``). Imports nothing from lmpt."""
import os
from pathlib import Path


def absolute(path):
    """``path`` with ``~`` expanded, made absolute from the current folder (a link keeps its name)."""
    return Path(os.path.abspath(os.path.expanduser(path)))


def resolve_user_path(path, script_dir):
    """A path as the user wrote it (``~`` expanded): relative to the current folder, or — as the published
    README wrote them, for scripts run from their own folder — relative to the script's folder."""
    path = Path(path).expanduser()
    if path.exists():  # absolute, so args.json and checkpoints name it from any folder
        return absolute(path)
    if path.is_absolute():
        return path
    beside_script = Path(script_dir) / path
    if beside_script.exists():
        return absolute(beside_script)
    return path
