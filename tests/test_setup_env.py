"""tools/setup_env.sh, on stand-in Pythons: a half-made .venv is made again, and a change of the script or
of the requirements installs again."""
import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A python that only answers what setup_env.sh asks of it, and logs it: `-m venv DIR` makes DIR/bin/python
# (a working one), `-m pip --version` and `-m pip install ...` succeed.
STAND_IN = """#!/usr/bin/env bash
echo "$0 $*" >> "$LOG"
if [ "$1 $2" = "-m venv" ]; then
  mkdir -p "$3/bin" && cp "$0" "$3/bin/python"
fi
exit 0
"""


def executable(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def run_setup(repo, log):
    env = dict(os.environ, PYTHON=str(repo / "python3"), LOG=str(log))
    return subprocess.run(["bash", str(repo / "tools" / "setup_env.sh")], env=env, capture_output=True, text=True)


def test_a_half_made_venv_is_made_again_and_changes_install_again(tmp_path):
    repo = tmp_path / "repo"
    (repo / "tools").mkdir(parents=True)
    shutil.copy(ROOT / "tools" / "setup_env.sh", repo / "tools" / "setup_env.sh")
    for name in ("requirements.txt", "requirements-dev.txt"):
        (repo / name).write_text("numpy\n")
    executable(repo / "python3", STAND_IN)
    log = tmp_path / "log"
    (repo / ".venv" / "bin").mkdir(parents=True)  # left by a `python -m venv` that failed (no ensurepip)
    executable(repo / ".venv" / "bin" / "python", "#!/usr/bin/env bash\necho 'No module named pip' >&2\nexit 1\n")

    assert run_setup(repo, log).returncode == 0
    calls = log.read_text().splitlines()
    assert calls[0].endswith("python3 -m venv .venv")  # made again
    assert sum("-m pip install" in c for c in calls) == 2  # torch, then the requirements

    log.unlink()
    assert run_setup(repo, log).returncode == 0
    assert not any("-m pip install" in c or "-m venv" in c for c in log.read_text().splitlines())  # no change

    with open(repo / "tools" / "setup_env.sh", "a") as f:  # the script (its torch pin) changed
        f.write("# changed\n")
    log.unlink()
    assert run_setup(repo, log).returncode == 0
    assert sum("-m pip install" in c for c in log.read_text().splitlines()) == 2
