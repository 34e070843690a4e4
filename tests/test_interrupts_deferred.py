"""A Ctrl-C or SIGTERM during a checkpoint write waits until the file is written (torch.save would turn it into
an error of its own and lose the file)."""
import collections
import os
import signal

import pytest
import torch

from lmpt.checkpoint import save_torch
from lmpt.interrupts import Interrupted, interrupts_deferred, sigterm_as_interrupt


class SignalWhilePickled:
    """Sends ``signum`` to this process while torch.save pickles it."""

    def __init__(self, signum):
        self.signum = signum

    def __reduce__(self):
        os.kill(os.getpid(), self.signum)
        return (collections.OrderedDict, ((('seven', 7),),))


@pytest.mark.parametrize("signum,raised", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Interrupted)])
def test_an_interrupt_during_save_torch_is_raised_once_the_file_is_written(tmp_path, signum, raised):
    path = tmp_path / "last.pt"
    with sigterm_as_interrupt(), pytest.raises(raised):
        save_torch(path, {"epoch": 3, "marker": SignalWhilePickled(signum), "model": {"w": torch.ones(2)}})
    saved = torch.load(path, weights_only=True)
    assert saved["epoch"] == 3 and saved["marker"] == {"seven": 7} and torch.equal(saved["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_deferral_nests_and_restores_the_handlers(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            with interrupts_deferred():
                os.kill(os.getpid(), signal.SIGINT)
            (tmp_path / "after-inner-block").write_text("the outer block still holds the interrupt")
    assert (tmp_path / "after-inner-block").exists()
    assert signal.getsignal(signal.SIGTERM) is before and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with interrupts_deferred():
        pass  # nothing pending: nothing raised
