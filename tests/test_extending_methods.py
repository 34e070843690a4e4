"""A prompt-tuning method added to lmpt/methods.py is offered by lmpt/train.py, and the published loop of the
speed benchmark, which knows CoOp and LMPT only, refuses it rather than training it with LMPT's formula."""
from argparse import Namespace

import pytest

from lmpt import methods, published_loop
from lmpt import train as train_script


def test_an_added_method_is_offered_and_the_published_loop_refuses_it(monkeypatch):
    added = {"PROMPT_METHODS": (*methods.PROMPT_METHODS, "lmpt-sym"),
             "CAPTION_METHODS": (*methods.CAPTION_METHODS, "lmpt-sym")}
    for module in (methods, train_script, published_loop):  # as an edit of lmpt/methods.py reaches its importers
        for name, value in added.items():
            monkeypatch.setattr(module, name, value, raising=False)
    [action] = [a for a in train_script.build_parser()._actions if a.dest == "training_method"]
    assert "lmpt-sym" in action.choices
    with pytest.raises(published_loop.PublishedLoopError, match="'lmpt-sym': the published loop covers coop and lmpt"):
        published_loop.train_published(Namespace(training_method="lmpt-sym", cseloss="softmargin"))
