"""The results ledger: every number a lesson or the README quotes, written by `make full` to results/NN_lesson.json.

Introduced in notebook 04_distill_mnist. A lesson adds one `record(...)` line per number it quotes; outside
`make full` (JupyterLab, nbval) `record` only checks and returns the number. Under `make full`
(KD_RESULTS_DIR and KD_LESSON set by scripts/run_full.py) it is staged, and `finalize` merges the stage with the
run's facts into the ledger file atomically, so an interrupted run leaves the previous file as it was.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import tempfile
import time
from pathlib import Path

import torch

from kd_lessons import config
from kd_lessons.stats import Interval, mean_interval, verdict

__all__ = ["SCHEMA", "LedgerError", "record", "stage", "finalize", "load", "validate", "write_json", "ledger_path",
           "machine"]

SCHEMA = 1
LESSON = re.compile(r"^\d\d_[a-z0-9_]+$")
NAME = re.compile(r"^[a-z0-9_]+$")
_RUN_KEYS = {"lesson": str, "commit": str, "date": str, "machine": dict, "mode": str, "seeds": list, "wall_s": dict,
             "numbers": dict, "asserts": list, "status": str}
_NUMBER_KEYS = {"value": float, "unit": str, "n": int, "values": list, "method": str, "text": str}


class LedgerError(ValueError):
    """A ledger file that is missing or malformed; the message names the file and the lesson to rerun."""


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (temporary file in the same folder, then rename): a crash leaves the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make the committed ledger private to one user
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _stage_file() -> Path | None:
    folder, lesson = config.results_dir(), config.lesson_id()
    if folder is None:
        return None
    if not LESSON.match(lesson):
        raise LedgerError(f"KD_RESULTS_DIR is set but KD_LESSON={lesson!r} is not a lesson id like '11_methods_tour';"
                          " run lessons through `make full LESSONS=11`, or unset KD_RESULTS_DIR")
    return folder / ".staging" / f"{lesson}.json"


def _update_stage(key: str, item) -> None:
    file = _stage_file()
    if file is None:
        return
    stage = json.loads(file.read_text()) if file.exists() else {"numbers": {}, "stages": []}
    if key == "numbers":
        stage["numbers"][item[0]] = item[1]
    else:
        stage["stages"].append(item)
    write_json(file, stage)


def _clean(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def record(name: str, values, unit: str, text: str = "", seeds=None, margin: float | None = None,
           higher_is_better: bool = True) -> dict:
    """Check and (under `make full`) stage one quoted number; returns its ledger entry. Notebook 04_distill_mnist.

    `values`: one number, one value per seed (mean and 95% t-interval) or a `kd_lessons.stats.Interval` (e.g. a
    paired difference: only an Interval gets a verdict, since only a difference can 'beat'). `margin`: the text's
    margin for "no difference"; the verdict uses it.
    """
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"name={name!r}: use lower_snake_case such as 'kd_minus_scratch_errors'")
    if not isinstance(unit, str) or not unit:
        raise ValueError(f"unit={unit!r}: say what the number counts ('errors', 'points', 'bits/char', 's', ...)")
    if isinstance(values, Interval):
        d = values
    elif isinstance(values, (int, float)) and not isinstance(values, bool):
        d = mean_interval([values], name)
    else:
        d = mean_interval(list(values), name)
    if seeds is not None and len(seeds) != d.n:
        raise ValueError(f"{name}: {len(seeds)} seeds for {d.n} values; pass one seed per value")
    entry = {"value": float(d.mean), "unit": unit, "n": int(d.n), "low": _clean(d.low), "high": _clean(d.high),
             "values": [float(v) for v in d.values], "method": d.method if d.n > 1 else "single", "text": text,
             "seeds": [int(s) for s in seeds] if seeds is not None else None, "margin": margin,
             "verdict": verdict(d, margin, higher_is_better) if isinstance(values, Interval) and d.n > 1 else None}
    _update_stage("numbers", (name, entry))
    return entry


@contextlib.contextmanager
def stage(name: str):
    """Time a stage of a lesson (teacher, sweep, students) into the ledger's wall_s. Notebook 04_distill_mnist."""
    start = time.perf_counter()
    try:
        yield
    finally:
        _update_stage("stages", {"name": name, "s": round(time.perf_counter() - start, 2)})


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> dict:
    """The machine facts a ledger records (a number measured on a GPU or in bf16 is not a CPU fp32 number)."""
    device = config.get_device()
    dtype = config.amp_dtype(device)
    names = {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(), "device": str(device),
            "dtype": "float32" if dtype is None else names.get(dtype, f"{dtype} autocast"),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}


def ledger_path(lesson: str, folder: Path | str = "results") -> Path:
    """results/<lesson>.json, for a lesson id such as '11_methods_tour'."""
    if not LESSON.match(lesson):
        raise ValueError(f"lesson={lesson!r}: use the notebook's stem, such as '11_methods_tour'")
    return Path(folder) / f"{lesson}.json"


def finalize(lesson: str, run: dict, folder: Path | str = "results") -> Path:
    """Merge the lesson's staged numbers and stages with `run` (commit, date, machine, ...) into its ledger file."""
    folder = Path(folder)
    staged = folder / ".staging" / f"{lesson}.json"
    stage_data = json.loads(staged.read_text()) if staged.exists() else {"numbers": {}, "stages": []}
    seeds = sorted({s for n in stage_data["numbers"].values() for s in (n.get("seeds") or [])})
    wall = dict(run.get("wall_s", {}))
    wall["stages"] = list(wall.get("stages", [])) + stage_data["stages"]
    obj = {"schema": SCHEMA, "seeds": seeds, **run, "lesson": lesson, "wall_s": wall, "numbers": stage_data["numbers"]}
    path = ledger_path(lesson, folder)
    validate(obj, path)
    write_json(path, obj)
    staged.unlink(missing_ok=True)
    return path


def _need(cond: bool, path, lesson: str, what: str) -> None:
    if not cond:
        raise LedgerError(f"{path}: {what}; rerun `make full LESSONS={lesson[:2] or 'NN'}` to rewrite it")


def validate(obj, path="ledger") -> dict:
    """Raise LedgerError (naming the file and the lesson to rerun) unless `obj` is a ledger of this schema."""
    lesson = obj.get("lesson", "") if isinstance(obj, dict) else ""
    lesson = lesson if isinstance(lesson, str) else ""
    _need(isinstance(obj, dict), path, lesson, "not a JSON object")
    _need(obj.get("schema") == SCHEMA, path, lesson, f"schema {obj.get('schema')!r}, expected {SCHEMA}")
    for key, kind in _RUN_KEYS.items():
        _need(isinstance(obj.get(key), kind), path, lesson, f"'{key}' missing or not a {kind.__name__}")
    _need(bool(LESSON.match(lesson)), path, lesson, f"lesson {lesson!r} is not a notebook stem")
    _need(obj["status"] in ("passed", "failed"), path, lesson, f"status {obj['status']!r}")
    _need(isinstance(obj["wall_s"].get("total"), (int, float)), path, lesson, "wall_s.total missing")
    for name, entry in obj["numbers"].items():
        _need(isinstance(entry, dict), path, lesson, f"number {name!r} is not an object")
        for key, kind in _NUMBER_KEYS.items():
            ok = isinstance(entry.get(key), kind) or (kind is float and isinstance(entry.get(key), int))
            _need(ok, path, lesson, f"number {name!r}: '{key}' missing or not a {kind.__name__}")
    for a in obj["asserts"]:
        _need(isinstance(a, dict) and isinstance(a.get("passed"), bool) and isinstance(a.get("source"), str),
              path, lesson, "each assert needs 'source' and 'passed'")
    return obj


def load(lesson: str, folder: Path | str = "results") -> dict:
    """The lesson's ledger, validated; a missing or malformed file raises LedgerError saying what to rerun."""
    path = ledger_path(lesson, folder)
    if not path.exists():
        raise LedgerError(f"{path} is missing: run `make full LESSONS={lesson[:2]}` to measure lesson {lesson}")
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise LedgerError(f"{path} is not valid JSON ({err}); rerun `make full LESSONS={lesson[:2]}`") from None
    return validate(obj, path)
