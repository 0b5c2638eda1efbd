"""Render the ledger (results/*.json, written by `make full`) into docs/results.md and the README's marked blocks.

A block is `<!-- ledger:KIND ARG -->` ... `<!-- /ledger:KIND -->`; the script owns what lies between the markers and
never touches the prose around them. Kinds: `lesson NN_stem` (docs/results.md: one lesson's run, numbers and
asserts), `summary` (the `make full` table), `status` (lessons and full-only asserts passed, inline),
`total` (its wall time, inline) and `number NN_stem/name` (one
recorded number, inline). `--write` rewrites the blocks (and adds a section for a new lesson); `--check` exits 1
listing what differs; tests/test_ledger.py runs the same check in `make test`.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

from kd_lessons import results
from kd_lessons.course import NOTEBOOK_GLOB

ROOT = Path(__file__).resolve().parents[1]

FILES = ("README.md", "docs/results.md")
DOCS = "docs/results.md"
BLOCK = re.compile(r"<!-- ledger:(?P<kind>[a-z]+)(?: (?P<arg>[^ ]+))? -->(?P<body>.*?)<!-- /ledger:(?P=kind) -->",
                   re.S)
INLINE = {"number", "total"}
MACHINE_KEYS = ("cpu", "cores", "threads", "device", "dtype", "gpu", "torch", "python", "platform")
WRITE = "run `.venv/bin/python scripts/render_results.py --write`"


def lessons(root: Path = ROOT) -> list[str]:
    """The course's lessons: the stems of notebooks/NN_*.ipynb, in number order."""
    return sorted(p.stem for p in (Path(root) / "notebooks").glob(NOTEBOOK_GLOB) if results.LESSON.match(p.stem))


def ledgers(root: Path = ROOT) -> dict[str, dict | None]:
    """Each lesson's validated ledger, or None where `make full` has not measured it yet."""
    out = {}
    for stem in lessons(root):
        path = results.ledger_path(stem, Path(root) / "results")
        if not path.exists():
            out[stem] = None
            continue
        obj = results.load(stem, Path(root) / "results")
        if obj["lesson"] != stem:
            raise results.LedgerError(f"{path}: says lesson {obj['lesson']!r}, not {stem!r}; rerun "
                                      f"`make full LESSONS={stem[:2]}` to rewrite it")
        out[stem] = obj
    return out


def num(x) -> str:
    """A measured value, fixed format: 3 significant digits, whole numbers from 100 up (counts keep every digit)."""
    if x is None or not math.isfinite(float(x)):
        return "n/a"
    x = float(x)
    s = f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"
    return "0" if s in ("-0", "-0.0") else s


def duration(s) -> str:
    """Wall seconds as '48.2 s', '13 min 09 s' or '1 h 02 min'."""
    s = float(s)
    if s < 59.5:
        return f"{s:.3g} s"
    whole = round(s)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    hours, minutes = divmod(round(whole / 60), 60)
    return f"{hours} h {minutes:02d} min"


def _cell(text) -> str:
    """Text safe inside one markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _not_measured(stem: str) -> str:
    return f"not measured yet: run `make full LESSONS={stem[:2]}`"


def _full_only(led: dict) -> tuple[int, int]:
    full = [a for a in led["asserts"] if a.get("full_only")]
    return sum(a["passed"] for a in full), len(full)


def _machine(m: dict) -> str:
    parts = [f"{k} {_cell(m[k])}" for k in MACHINE_KEYS if m.get(k) not in (None, "")]
    parts += [f"{k} {_cell(m[k])}" for k in sorted(set(m) - set(MACHINE_KEYS)) if m[k] not in (None, "")]
    return ", ".join(parts) or "not recorded"


def _wall(led: dict) -> str:
    stages = ", ".join(f"{_cell(st.get('name'))} {duration(st.get('s', 0))}" for st in led["wall_s"].get("stages", []))
    return duration(led["wall_s"]["total"]) + (f" ({stages})" if stages else "")


def number_row(name: str, e: dict) -> str:
    """One table row of a recorded number: name, the sentence it backs, value, interval, n, unit, method, verdict."""
    interval = f"{num(e.get('low'))}..{num(e.get('high'))}" if e["n"] > 1 else "—"
    verdict = e.get("verdict") or "—"
    if e.get("margin") is not None:
        verdict += f" (margin {num(e['margin'])})"
    return (f"| `{name}` | {_cell(e['text']) or '—'} | {num(e['value'])} | {interval} | {e['n']} | {_cell(e['unit'])} "
            f"| {e['method']} | {verdict} |")


def _asserts(led: dict) -> list[str]:
    rows = sorted(led["asserts"], key=lambda a: (a.get("cell", -1), a.get("line", -1), a["source"]))
    if not rows:
        return ["Asserts: none recorded."]
    passed, full = _full_only(led)
    out = [f"Asserts: {len(rows)}, of which {full} full-only ({passed} passed).", "",
           "| cell | line | assert | full-only | result |", "| --- | --- | --- | --- | --- |"]
    for a in rows:
        source = _cell(a["source"]).replace("`", "'")
        full_only = "yes" if a.get("full_only") else "no"
        result = "passed" if a["passed"] else f"**{_cell(a.get('note') or 'failed')}**"
        out.append(f"| {a.get('cell', '—')} | {a.get('line', '—')} | `{source}` | {full_only} | {result} |")
    return out


def lesson_block(stem: str, led: dict | None) -> str:
    """docs/results.md's section of one lesson: the run's facts, its numbers table and its asserts."""
    if led is None:
        return _not_measured(stem)
    seeds = ", ".join(str(s) for s in led["seeds"]) or "none recorded"
    out = [f"- run: commit `{led['commit'][:7]}`, {_cell(led['date'])}, mode {_cell(led['mode'])}, "
           f"status **{led['status']}**",
           f"- machine: {_machine(led['machine'])}", f"- wall time: {_wall(led)}", f"- seeds: {seeds}", ""]
    if led["numbers"]:
        out += ["| number | backs | value | 95% interval | n | unit | method | verdict |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        out += [number_row(name, led["numbers"][name]) for name in sorted(led["numbers"])]
    else:
        out.append("Numbers: none recorded.")
    return "\n".join(out + [""] + _asserts(led))


def summary_block(all_ledgers: dict) -> str:
    """The README's `make full` table: one row per lesson, then the total wall time."""
    out = ["| lesson | wall time | load | status | full-only asserts passed | commit |",
           "| --- | --- | --- | --- | --- | --- |"]
    for stem, led in sorted(all_ledgers.items()):
        if led is None:
            out.append(f"| `{stem}` | — | — | not measured yet | — | — |")
            continue
        passed, full = _full_only(led)
        load = led["machine"].get("load_1min") or {}
        load = f"{num(load['start'])}-{num(load['end'])}" if {"start", "end"} <= set(load) else "—"
        out.append(f"| `{stem}` | {duration(led['wall_s']['total'])} | {load} | {led['status']} | {passed}/{full} "
                   f"| `{led['commit'][:7]}` |")
    return "\n".join(out + ["", f"`make full` in all: {total_block(all_ledgers)}."])


def status_block(all_ledgers: dict) -> str:
    """The README's one line: lessons passed, full-only asserts passed, and which lessons failed."""
    measured = {stem: led for stem, led in all_ledgers.items() if led is not None}
    counts = [_full_only(led) for led in measured.values()]
    failed = [stem.split("_")[0] for stem, led in sorted(measured.items()) if led["status"] != "passed"]
    return (f"{len(measured) - len(failed)} of {len(all_ledgers)} lessons passed, "
            f"{sum(p for p, _ in counts)} of {sum(f for _, f in counts)} full-only asserts passed"
            + (f"; failed: {', '.join(failed)}" if failed else ""))


def total_block(all_ledgers: dict) -> str:
    """The total wall time of `make full`: the sum of the lessons' wall_s.total, and how many lessons it covers."""
    measured = [led for led in all_ledgers.values() if led is not None]
    if not measured:
        return "not measured yet: run `make full`"
    total = sum(led["wall_s"]["total"] for led in measured)
    return f"{duration(total)} ({len(measured)} of {len(all_ledgers)} lessons measured)"


def number_block(ref: str, all_ledgers: dict, where: str) -> str:
    """One recorded number inline: 'value unit (95% interval low..high, n seeds)'."""
    stem, _, name = ref.partition("/")
    if stem not in all_ledgers or not name:
        raise ValueError(f"{where}: `ledger:number {ref}` names no lesson/number; write it as NN_stem/name")
    led = all_ledgers[stem]
    if led is None:
        return f"not measured yet (`make full LESSONS={stem[:2]}`)"
    if name not in led["numbers"]:
        raise results.LedgerError(f"{where} quotes {ref}, which results/{stem}.json does not record: record it in "
                                  f"the lesson and rerun `make full LESSONS={stem[:2]}`, or drop the marker")
    e = led["numbers"][name]
    if e["n"] < 2:
        return f"{num(e['value'])} {e['unit']} (one run)"
    return f"{num(e['value'])} {e['unit']} (95% interval {num(e['low'])}..{num(e['high'])}, n={e['n']})"


def block_body(kind: str, arg: str | None, all_ledgers: dict, where: str) -> str:
    """What the script writes between one block's markers."""
    if kind == "lesson":
        if arg not in all_ledgers:
            raise ValueError(f"{where}: `ledger:lesson {arg}` is no notebooks/NN_*.ipynb lesson; rename or drop it")
        return "\n" + lesson_block(arg, all_ledgers[arg]) + "\n"
    if kind == "summary":
        return "\n" + summary_block(all_ledgers) + "\n"
    if kind == "total":
        return total_block(all_ledgers)
    if kind == "status":
        return status_block(all_ledgers)
    if kind == "number":
        return number_block(arg or "", all_ledgers, where)
    raise ValueError(f"{where}: unknown block `ledger:{kind}`; the kinds are lesson, summary, status, total, number")


def render_text(text: str, all_ledgers: dict, where: str) -> str:
    """`text` with every ledger block's body rendered; docs/results.md also gains a section per unlisted lesson."""
    def fill(m: re.Match) -> str:
        arg = f" {m['arg']}" if m["arg"] else ""
        body = block_body(m["kind"], m["arg"], all_ledgers, where)
        return f"<!-- ledger:{m['kind']}{arg} -->{body}<!-- /ledger:{m['kind']} -->"

    if where == DOCS:
        listed = {m["arg"] for m in BLOCK.finditer(text) if m["kind"] == "lesson"}
        for stem in sorted(set(all_ledgers) - listed):
            text = text.rstrip("\n") + f"\n\n## {stem}\n\n<!-- ledger:lesson {stem} --><!-- /ledger:lesson -->\n"
    return BLOCK.sub(fill, text)


def rendered(root: Path = ROOT) -> dict[str, tuple[str, str]]:
    """For README.md and docs/results.md: (the file as it is, the file as the ledger renders it)."""
    all_ledgers = ledgers(root)
    out = {}
    for rel in FILES:
        path = Path(root) / rel
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: restore it from git (the script fills its blocks only)")
        text = path.read_text(encoding="utf-8")
        out[rel] = (text, render_text(text, all_ledgers, rel))
    return out


def stray_numbers(text: str) -> list[str]:
    """Lines of docs/results.md that quote a number outside the ledger blocks.

    A number is one standing alone ('931', '2.45', '+0.3'); names that hold digits (CIFAR-10, int8, 7s) and code
    spans, headings, links and the standard's '95%' are allowed.
    """
    bad = []
    outside = BLOCK.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    for i, line in enumerate(outside.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        bare = re.sub(r"`[^`]*`|<!--.*?-->|\]\([^)]*\)|95%", "", line)
        if re.search(r"(?<!\w)(?<!\w-)\d+(?:[.,]\d+)*(?!\w)", bare):
            bad.append(f"{DOCS}:{i}: a number outside the ledger blocks: {line.strip()}")
    return bad


def differences(root: Path = ROOT) -> list[str]:
    """Each block of README.md and docs/results.md that differs from the ledger's rendering, one line each."""
    problems = []
    for rel, (now, want) in rendered(root).items():
        if now == want:
            continue
        have = {(m["kind"], m["arg"]): m["body"] for m in BLOCK.finditer(now)}
        found = []
        for m in BLOCK.finditer(want):
            key = (m["kind"], m["arg"])
            if have.get(key) != m["body"]:
                block = f"`ledger:{m['kind']}{' ' + m['arg'] if m['arg'] else ''}`"
                found.append(f"{rel}: block {block} {'differs from' if key in have else 'is missing for'} the ledger;"
                             f" {WRITE}")
        problems += found or [f"{rel} differs from its rendering; {WRITE}"]
    return problems


def check(root: Path = ROOT) -> list[str]:
    """What `--check` reports: the blocks that differ from the ledger and the numbers docs/results.md quotes outside."""
    return differences(root) + stray_numbers((Path(root) / DOCS).read_text(encoding="utf-8"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite the ledger blocks of README.md and docs/results.md")
    mode.add_argument("--check", action="store_true", help="exit 1 listing every block that differs from the ledger")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(ROOT)
        print("\n".join(problems) or "README.md and docs/results.md match the ledger")
        return 1 if problems else 0
    for rel, (now, want) in rendered(ROOT).items():
        if now != want:
            (ROOT / rel).write_text(want, encoding="utf-8")
        print(f"{rel}: {'rewritten' if now != want else 'unchanged'}")
    stray = stray_numbers((ROOT / DOCS).read_text(encoding="utf-8"))
    if stray:
        print("\n".join(stray))
    return 1 if stray else 0


if __name__ == "__main__":
    sys.exit(main())
