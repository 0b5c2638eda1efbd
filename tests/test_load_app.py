"""bench/load_app.py with a small class (quick mode): sessions redraw without errors and "train now" queues.

The timing target (p95 under 2 s with 10 sessions) is the bench's job (`make load-test`); this checks the rest.
"""
import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "load_app.py"
    spec = importlib.util.spec_from_file_location("load_app", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_three_sessions_move_sliders_without_errors_and_trainings_queue(monkeypatch):
    monkeypatch.setenv("KD_QUICK", "1")
    bench = _bench()
    r = bench.run(sessions=3, moves=4, think=0.2, train=2)
    assert r["errors"] == []
    assert r["redraws"] >= 3 * 4 - 3  # every session moved sliders (the pressing ones spent a move on the button)
    assert r["train_requests"] == 3 and r["sessions_got_their_result"] == 3
    cells = [c[1:] for c in r["trained_cells"]]
    assert sorted(cells) == [(2.0, 0.3), (3.0, 0.3)]  # session 2 asked for session 0's cell: trained once
    assert r["max_concurrent_trainings"] == 1
