"""What a measurement was made with, for the reports of tools/benchmark_speed.py and tools/demo.py: the code's
commit (``code_version``) and the processor (``cpu_model``). No import of torch or of lmpt's other modules."""
import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# CPU features that change the speed and the rounding of bf16 autocast (README, "The tiny CLIP")
CPU_FEATURES = (("avx512_bf16", "AVX-512 BF16"), ("amx_bf16", "AMX BF16"))


def code_version(root=REPO_ROOT):
    """{"commit": the checked-out commit of the git repository at ``root``, "modified": whether tracked files differ
    from it}; both None where ``root`` is no git checkout or git is missing (a copy without .git)."""
    def git(*args):
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        if done.returncode:
            raise OSError(done.stderr.strip())
        return done.stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        modified = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):  # OSError: no git, or not a repository
        return {"commit": None, "modified": None}
    return {"commit": commit, "modified": modified}


def cpu_model(cpuinfo):
    """'<model name>, <bf16 features>' of the first processor in /proc/cpuinfo's text, or None."""
    fields = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block ends
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    name = fields.get("model name")
    if not name:
        return None
    flags = fields.get("flags", "").split()
    return ", ".join([name] + [label for flag, label in CPU_FEATURES if flag in flags])


def cpu_name(detail=None):
    """'CPU <model> (<n> cores[, detail])' of this machine (the model where /proc/cpuinfo names it)."""
    try:
        model = cpu_model(Path("/proc/cpuinfo").read_text())
    except OSError:  # not Linux
        model = None
    return f"CPU{' ' + model if model else ''} ({os.cpu_count()} cores{', ' + detail if detail else ''})"
