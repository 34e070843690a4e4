"""Interrupt deferral around an epoch's writes and outside the main thread: a SIGTERM that comes between
metrics.jsonl and last.pt stops the run only once the epoch's three files are written; save_torch from a worker
thread (no signal handler can be set there) writes its file."""
import json
import os
import signal
import threading

import pytest
import torch

from lmpt import engine
from lmpt.checkpoint import save_torch
from lmpt.engine import fit
from lmpt.interrupts import Interrupted, sigterm_as_interrupt


def tiny_fit(run_dir, epochs):
    """``engine.fit`` of a one-weight model on 6 samples, batches of 3, 'mAP' rising each epoch."""
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    x, y = torch.randn(6, 1), torch.randn(6, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max")
    evaluations = iter(range(1, 100))

    def batch_loss(index, flips, epoch, step):
        loss = ((model(x[index]) - y[index]) ** 2).mean()
        return loss, {}

    def evaluate():
        return float(next(evaluations)), {}

    return fit(model, batch_loss, evaluate, optimizer, scheduler, run_dir, epochs, batch_size=3, n_train=6,
               seed=0, config={"method": "tiny"})


def test_a_sigterm_after_the_metrics_are_written_stops_the_run_once_last_and_best_are_written(tmp_path, monkeypatch):
    written = engine.write_metrics

    def write_then_sigterm(path, rows):
        written(path, rows)
        os.kill(os.getpid(), signal.SIGTERM)  # comes before last.pt and best.pt are written
    monkeypatch.setattr(engine, "write_metrics", write_then_sigterm)
    with sigterm_as_interrupt(), pytest.raises(Interrupted):
        tiny_fit(tmp_path, epochs=3)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1]  # stopped after the first epoch...
    for name in ("last.pt", "best.pt"):  # ...whose checkpoints are both written
        saved = torch.load(tmp_path / name, weights_only=True)
        assert (saved["epoch"], saved["best"]) == (0, {"epoch": 0, "mAP": 1.0}), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt", "metrics.jsonl"]


def test_save_torch_in_a_worker_thread_writes_its_file(tmp_path):
    path, errors = tmp_path / "features.pt", []

    def save():
        try:
            save_torch(path, {"features": torch.ones(2, 3)})
        except Exception as error:  # the test's own catch: an error in a thread is not raised in the test
            errors.append(error)
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    worker = threading.Thread(target=save)
    worker.start()
    worker.join()
    assert errors == []
    assert torch.equal(torch.load(path, weights_only=True)["features"], torch.ones(2, 3))
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
