"""framework.png is drawn by tools/draw_framework.py: it renders, at the stated size, with no label collisions."""
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import draw_framework  # noqa: E402


def test_framework_figure_renders_cleanly(tmp_path):
    fig = draw_framework.draw(tmp_path / "f.png")
    assert draw_framework.text_overlaps(fig) == []
    assert Image.open(tmp_path / "f.png").size == (1600, 800)
