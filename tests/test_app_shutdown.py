"""Stopping the app while it trains: the process exits cleanly, never with "terminate called" (SIGABRT).

A thread left inside torch's C++ code while Python finalises aborts the process; kd_lessons.app.jobs stops
and joins its threads at exit. Checked in a small script (the queue and a teacher job, real torch training)
and in a real `streamlit run app.py` server stopped with SIGTERM while its first teacher trains.
"""
import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test starts Python with torch (10-35 s on the shared 2 cores)
ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import signal, sys, time
    import torch
    from kd_lessons.app import jobs

    def train(job=None, steps=None):
        model, x = torch.nn.Linear(784, 300), torch.randn(256, 784)
        opt = torch.optim.SGD(model.parameters(), 0.1)
        for step in range(1, 10**9):
            loss = model(x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if job is not None:
                job.on_step(step, 10**9)  # the queue's job: stops at its next step
            if steps is not None:
                steps.append(step)  # the teacher job: checks no hook, so it is interrupted

    queue, steps = jobs.TrainingQueue(lock_file=False), []
    queued = queue.submit("cell", "KD", train)
    teacher = jobs.start_teachers("mnist", lambda dataset, options, **kw: train(steps=steps), starter=False)
    while queued.done_steps < 3 or len(steps) < 3:
        time.sleep(0.05)
    if sys.argv[1] == "sigterm":  # as Streamlit does: SIGTERM ends the main loop, then Python exits
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        print("training", flush=True)
        time.sleep(60)
    print("exiting", flush=True)
""")


def _stops_cleanly(cmd: list[str], env: dict, stop, within_s: float) -> None:
    """Start cmd, let stop(proc) stop it, then check it exited 0 within within_s, with no abort and no stuck thread."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stop(proc)
        start = time.monotonic()
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert "terminate called" not in err and proc.returncode == 0, (proc.returncode, err[-2000:])
    assert time.monotonic() - start < within_s and "still running" not in err, (time.monotonic() - start, err[-2000:])


@pytest.mark.parametrize("how", ["exit", "sigterm"])
def test_a_script_exits_cleanly_while_two_jobs_train(tmp_path, how):
    env = {**os.environ, "KD_QUICK": "1", "KD_CACHE_DIR": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}

    def stop(proc):
        if how == "sigterm":
            assert proc.stdout.readline().strip() == "training"
            proc.send_signal(signal.SIGTERM)

    # the queue's job stops at a step, the other within the grace period
    _stops_cleanly([sys.executable, "-c", SCRIPT, how], env, stop, within_s=15)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _open_page_until_training(port: int, timeout: float) -> bytes:
    """Connect as a browser does (Streamlit's websocket), run the page, return the first progress message."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from tornado.websocket import websocket_connect

    deadline = time.monotonic() + timeout
    while True:
        try:
            ws = await websocket_connect(f"ws://127.0.0.1:{port}/_stcore/stream", subprotocols=["streamlit"])
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    rerun = BackMsg()
    rerun.rerun_script.query_string = ""
    await ws.write_message(rerun.SerializeToString(), binary=True)
    while True:
        data = await asyncio.wait_for(ws.read_message(), deadline - time.monotonic())
        assert data is not None, "the server closed the page's connection"
        if b"teacher: step " in data:  # the progress bar of the first launch's teacher training
            return data


def test_streamlit_server_stopped_while_its_teacher_trains_exits_cleanly(tmp_path):
    """A fresh cache: opening the page trains the starter teacher in a job thread; SIGTERM stops the server."""
    from kd_lessons.data import DataUnavailableError, load_tensors

    try:
        load_tensors("mnist", train=False)
    except DataUnavailableError as exc:
        pytest.skip(f"MNIST not available: {exc}")
    port = _free_port()
    env = {**os.environ, "KD_QUICK": "1", "KD_CACHE_DIR": str(tmp_path / "cache"), "KD_DEVICE": "cpu",
           "PYTHONUNBUFFERED": "1"}

    def stop(proc):
        asyncio.run(_open_page_until_training(port, timeout=90))
        proc.send_signal(signal.SIGTERM)

    _stops_cleanly([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
                    "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats",
                    "false", "--server.fileWatcherType", "none"], env, stop, within_s=30)
