"""Every tool in tools/ reads a flag only as written, as the scripts do (README, Usage): an abbreviation is an
unrecognised argument, named in the error, not another flag of the tool. Each call also carries a flag no tool has,
so no tool does any work whatever it makes of the abbreviation."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import benchmark_speed  # noqa: E402
import device_check  # noqa: E402
import draw_framework  # noqa: E402
import feature_cache  # noqa: E402
import make_synthetic  # noqa: E402
import pretrain_tiny_clip  # noqa: E402

UNKNOWN = "--no_such_flag_anywhere"


@pytest.mark.parametrize("parse, abbreviation", [
    (lambda argv: benchmark_speed.build_parser().parse_args(argv), ["--pres", "cpu"]),  # --preset
    (device_check.main, ["--back", "vit"]),  # --backbones
    (draw_framework.main, ["--ch"]),  # --check
    (feature_cache.main, ["--cache", "/nonexistent"]),  # --cache_dir
    (make_synthetic.main, ["--n_tr", "5"]),  # --n_train
    (pretrain_tiny_clip.main, ["--fa"]),  # --fast
])
def test_an_abbreviated_flag_is_refused(parse, abbreviation, capsys):
    with pytest.raises(SystemExit) as stop:
        parse([*abbreviation, UNKNOWN])
    assert stop.value.code == 2
    unrecognised = capsys.readouterr().err.split("unrecognized arguments: ")[-1].split()  # the error's last line
    assert unrecognised == [*abbreviation, UNKNOWN]
