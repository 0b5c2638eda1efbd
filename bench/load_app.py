"""A class on one server: N simulated sessions move the app's sliders; p50/p95 redraw latency, errors, the queue.

`make load-test` (or `python bench/load_app.py --sessions 10`). Each session is a Streamlit AppTest of
app.py in its own thread of this one process, as the sessions of one `streamlit run` server share its
process, its caches and its cores. Every session opens the page, then moves a random sidebar, Compare or
Playground slider (a Playground move retrains its two students unless a session trained that setting
before) every `--think` seconds (uniform 0.5x-1.5x) and times the full redraw (the script rerun that a
browser waits for; in a browser a Playground move reruns its tab only, bench/playground_speed.py).
Meanwhile `--train` sessions press "Train this student now", two of them on the same cell: the app's
TrainingQueue must train one at a time and that cell once, and the sessions keep moving sliders while
they wait. Before the sessions start, the page is opened once and the heatmap filled (what
`python -m kd_lessons prepare-class` does before a class). Exits 1 when the p95 redraw exceeds `--target`
seconds, a redraw shows an error, two trainings overlap, or a cell trains twice.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from kd_lessons import config
from kd_lessons.app import jobs, panels
from kd_lessons.app.playground_data import OPTIONS

APP = str(Path(__file__).resolve().parents[1] / "app.py")
SLIDERS = {  # key -> (kind, values a student may pick)
    "T": ("select_slider", panels.temperatures()),
    "alpha": ("slider", [round(0.05 * i, 2) for i in range(21)]),
    "n_images": ("slider", list(range(1, 9))),
    "cmp_T_left": ("select_slider", panels.temperatures()),
    "cmp_T_right": ("select_slider", panels.temperatures()),
    **{f"pg_{name}": ("select_slider", list(OPTIONS[name]))
       for name in ("T", "alpha", "labels", "unlabelled", "width")},  # the Playground tab (issue 25)
}


class Training:
    """Wraps jobs.train_cell: counts trainings running at once and the cells trained."""

    def __init__(self):
        self.lock, self.active, self.max_active, self.cells = threading.Lock(), 0, 0, []
        self.real = jobs.train_cell

    def __call__(self, rec, T, alpha):
        work = self.real(rec, T, alpha)

        def counted(job):
            with self.lock:
                self.active += 1
                self.max_active = max(self.max_active, self.active)
                self.cells.append((rec.key, T, alpha))  # the recipe's cache key names it
            try:
                return work(job)
            finally:
                with self.lock:
                    self.active -= 1
        return counted


@contextlib.contextmanager
def one_runtime():
    """Let AppTests run at once in threads, sharing one Runtime as a server's sessions do.

    Each AppTest.run installs its own mock Runtime as the singleton and removes it when it ends, and sets the
    `global.appTest` option for its run only; concurrent runs would remove each other's. Here the first mock
    stays for all of them and the option is set once. They also share one script cache, as a server does
    (compiling the script once; Python 3.11's compile() is not safe in concurrent threads).
    """
    from streamlit import config as st_config
    from streamlit.runtime import Runtime
    from streamlit.testing.v1 import app_test

    shared, real_instance, real_exists = {}, Runtime.__dict__["instance"], Runtime.__dict__["exists"]
    real_patch, real_option = app_test.patch_config_options, st_config.get_option("global.appTest")

    def instance(cls):
        if cls._instance is not None:
            shared.setdefault("runtime", cls._instance)
        return shared.get("runtime") or real_instance.__func__(cls)

    Runtime.instance = classmethod(instance)
    Runtime.exists = classmethod(lambda cls: cls._instance is not None or "runtime" in shared)
    app_test.patch_config_options = lambda options: contextlib.nullcontext()
    st_config.set_option("global.appTest", True)
    from streamlit.testing.v1 import local_script_runner

    real_cache = local_script_runner.ScriptCache
    script_cache = real_cache()
    local_script_runner.ScriptCache = lambda: script_cache
    try:
        yield
    finally:
        Runtime.instance, Runtime.exists = real_instance, real_exists
        app_test.patch_config_options, local_script_runner.ScriptCache = real_patch, real_cache
        st_config.set_option("global.appTest", real_option)


def problems(at: AppTest) -> list[str]:
    """Exceptions and error boxes on the page."""
    return [str(e.value)[:200] for e in at.exception] + [str(e.value)[:200] for e in at.error]


def warm_up(timeout: float) -> float:
    """Open the page once and wait until the heatmap and its seed spread show; return the seconds it took."""
    start = time.perf_counter()
    at = AppTest.from_file(APP, default_timeout=timeout).run()
    while not any(m.label == "Span / seed spread" for m in at.metric):
        if problems(at):
            raise RuntimeError(f"the page shows errors before the load starts: {problems(at)}")
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"the heatmap did not fill within {timeout:.0f} s; run prepare-class first")
        time.sleep(2)
        at.run()
    return time.perf_counter() - start


def session(index: int, moves: int, think: float, train_cell: tuple | None, out: dict, timeout: float) -> None:
    """One student: open the page, move sliders `moves` times, maybe press "train now" halfway."""
    rng = random.Random(index)
    rec = out.setdefault(index, {"redraws": [], "errors": [], "queued": [], "open": None, "trained": None})
    try:
        start = time.perf_counter()
        at = AppTest.from_file(APP, default_timeout=timeout).run()
        rec["open"] = time.perf_counter() - start
        rec["errors"] += problems(at)
        pressed = False
        for move in range(moves):
            time.sleep(think * rng.uniform(0.5, 1.5))
            if train_cell is not None and not pressed and move >= moves // 3:
                at.select_slider(key="T").set_value(train_cell[0])
                at.slider(key="alpha").set_value(train_cell[1]).run()
                at.button(key="train_now").click().run()
                pressed = True
            else:
                key = rng.choice(list(SLIDERS))
                kind, values = SLIDERS[key]
                widget = at.select_slider(key=key) if kind == "select_slider" else at.slider(key=key)
                widget.set_value(rng.choice(values))
                start = time.perf_counter()
                at.run()
                rec["redraws"].append(time.perf_counter() - start)
            rec["errors"] += problems(at)
            rec["queued"] += [i.value for i in at.info if "ahead of yours" in i.value]
        deadline = time.perf_counter() + timeout
        while pressed and "train_request" in at.session_state and time.perf_counter() < deadline:
            time.sleep(1)
            at.run()
            rec["errors"] += problems(at)
            rec["queued"] += [i.value for i in at.info if "ahead of yours" in i.value]
        if pressed:
            rec["trained"] = "train_request" not in at.session_state and "live" in at.session_state
    except Exception as exc:  # noqa: BLE001 - a crashed session is an error to count, not to hide
        rec["errors"].append(f"session {index} crashed: {type(exc).__name__}: {exc}")


def run(sessions: int = 10, moves: int = 20, think: float = 3.0, train: int = 3, timeout: float = 600) -> dict:
    """Run the load; return the measurements (what main prints and tests/test_load_app.py checks)."""
    counter = Training()
    jobs.train_cell = counter
    with one_runtime():
        return _measure(sessions, moves, think, train, timeout, counter)


def _measure(sessions: int, moves: int, think: float, train: int, timeout: float, counter: Training) -> dict:
    try:
        warm = warm_up(timeout)
        cells = [(2.0, 0.3), (3.0, 0.3), (5.0, 0.3)][:max(0, train)]
        plan = {i: cells[i] for i in range(len(cells))}
        if train >= 2 and sessions > len(cells):
            plan[len(cells)] = cells[0]  # the same cell as session 0: trained once, both get it
        out: dict = {}
        threads = [threading.Thread(target=session, args=(i, moves, think, plan.get(i), out, timeout),
                                    name=f"student-{i}") for i in range(sessions)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
    finally:
        jobs.train_cell = counter.real
    redraws = sorted(x for r in out.values() for x in r["redraws"])
    q = statistics.quantiles(redraws, n=20, method="inclusive") if len(redraws) >= 2 else redraws * 19
    return {"sessions": sessions, "redraws": len(redraws), "p50": statistics.median(redraws) if redraws else None,
            "p95": q[18] if redraws else None, "max": max(redraws) if redraws else None,
            "open_p50": statistics.median([r["open"] for r in out.values() if r["open"] is not None] or [0.0]),
            "errors": [e for r in out.values() for e in r["errors"]], "wall": wall, "warm_up": warm,
            "train_requests": len(plan), "trained_cells": counter.cells, "max_concurrent_trainings": counter.max_active,
            "max_queue_position": max([int(m.split("Queued: ")[1].split()[0]) for r in out.values()
                                       for m in r["queued"]] or [0]),
            "sessions_got_their_result": sum(1 for r in out.values() if r["trained"]),
            "mode": config.mode(), "describe": config.describe()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--moves", type=int, default=20, help="slider moves per session")
    parser.add_argument("--think", type=float, default=3.0, help="mean seconds between a session's moves (1 = stress)")
    parser.add_argument("--train", type=int, default=3, help="distinct cells pressed 'train now' (one twice)")
    parser.add_argument("--target", type=float, default=2.0, help="p95 redraw target in seconds")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.moves < 1:
        parser.error(f"--sessions {args.sessions} --moves {args.moves}: both must be at least 1")
    r = run(args.sessions, args.moves, args.think, args.train)
    print(f"{r['describe']}; cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{r['sessions']} sessions, {r['redraws']} slider redraws in {r['wall']:.0f} s ({r['mode']} mode; "
          f"warm-up {r['warm_up']:.0f} s, first page p50 {r['open_p50']:.2f} s)")
    print(f"redraw latency: p50 {r['p50']:.2f} s, p95 {r['p95']:.2f} s, max {r['max']:.2f} s (target p95 < "
          f"{args.target:g} s); errors: {len(r['errors'])}")
    print(f"train now: {r['train_requests']} requests, cells trained {len(r['trained_cells'])} "
          f"({len(set(r['trained_cells']))} distinct), at most {r['max_concurrent_trainings']} at once, queue "
          f"position shown up to {r['max_queue_position']}, {r['sessions_got_their_result']} sessions got their result")
    for e in r["errors"][:10]:
        print("  error:", e)
    bad = (r["p95"] is None or r["p95"] >= args.target or r["errors"] or r["max_concurrent_trainings"] > 1
           or len(r["trained_cells"]) != len(set(r["trained_cells"])))
    print("FAIL" if bad else "PASS")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
