"""Counting a cell's runs per execution mode, explaining every doubled or lost one, and the Markdown tables."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from _cell import SCENARIOS, Event, Timeline, Worker
from worker import TASKS

#: Why a run ran twice or was lost, as the guarantee that covers it (an anchor in docs/reliability.md).
REASONS = {
    "kill-after-body": (
        "its body had finished in the killed process, whose commit was never stored; the lease expired and "
        "another worker ran it again",
        "at-least-once",
    ),
    "kill-mid-body": (
        "at-most-once committed it before its body started, and the process running the body was killed",
        "at-most-once",
    ),
    "kill-before-start": (
        "no start was recorded: at-most-once committed it in a process that was killed before the body began",
        "at-most-once",
    ),
    "skew-ahead": (
        "one of the runs was by the worker whose clock was ahead by more than the lease: it took over a lease "
        "another worker still held",
        "clock-skew",
    ),
    "skew-behind": (
        "one of the runs was by the worker whose clock was behind by more than the lease: its lease looked "
        "expired to the others from the moment it was taken, and another worker took the run over",
        "clock-skew",
    ),
    "commit-answer": (
        "a bug: the commit was stored but its answer lost, and by the time the app checked the stored record "
        "another worker had moved the static task on to later runs, so the app took its commit for lost and "
        "skipped the body",
        "known-issue-lost-commit-answer",
    ),
    "unexplained": ("NOT covered by a documented guarantee", "unexplained"),
}

Key = tuple[str, str]


def _key(event: Event, template: str) -> Key:
    if event.task == template:
        return event.task, event.instance
    return event.task, str(round(event.scheduled))


def summarize(cell: Mapping[str, Any], mode: str) -> dict[str, Any]:
    """The counts of one execution mode in a cell: expected, once, twice, lost, set aside, resume, catch-up."""
    template, static = TASKS[mode]
    timeline: Timeline = cell["timeline"]
    workers: Sequence[Worker] = cell["workers"]
    killed = {w.name: w.killed_at for w in workers if w.killed_at is not None}
    skewed = {w.name: w.skew for w in workers if w.skew}
    done: dict[Key, list[Event]] = defaultdict(list)
    starts: dict[Key, list[Event]] = defaultdict(list)
    mine = [e for e in cell["events"] if e.task in (template, static)]
    for event in mine:
        (done if event.kind == "D" else starts)[_key(event, template)].append(event)

    due: dict[Key, float] = {(template, name): at for name, at in timeline.due[mode].items()}
    ticks = sorted(int(key[1]) for key in done if key[0] == static)
    if ticks:
        # The static task's window: from its first run to 2 s before its last (runs at the very end may be
        # claimed but not yet finished when the workers stop). It runs its occurrences in order, so every
        # second inside the window is due once.
        due.update({(static, str(second)): float(second) for second in range(ticks[0], ticks[-1] - 1)})
    corrupted = {(template, name) for name in timeline.corrupted}

    once = sum(1 for key in due if len(done.get(key, ())) == 1)
    doubled = {key: runs for key, runs in done.items() if len(runs) > 1}
    lost = [key for key in due if not done.get(key) and key not in corrupted]
    aside = [key for key in corrupted if not done.get(key)]
    unexpected = [key for key in done if key not in due and key[0] == template]

    twice_reasons: dict[str, list[str]] = defaultdict(list)
    for key, runs in doubled.items():
        if any(e.worker in killed and e.wall <= (killed[e.worker] or 0) for e in runs):
            reason = "kill-after-body"
        elif any(e.worker in skewed for e in runs):
            reason = "skew-ahead" if skewed[next(e.worker for e in runs if e.worker in skewed)] > 0 else "skew-behind"
        else:
            reason = "unexplained"
        twice_reasons[reason].append(_describe(key, runs, timeline.fault_at))
    lost_reasons: dict[str, list[str]] = defaultdict(list)
    for key in lost:
        begun = starts.get(key, [])
        if mode == "at-most-once" and any(e.worker in killed for e in begun):
            reason = "kill-mid-body"
        elif mode == "at-most-once" and killed and not begun:
            reason = "kill-before-start"
        elif (
            mode == "at-most-once"
            and not begun
            and key[0] == static
            and cell["logs"]["not_run_after_commit"].get(static)
            and (cell["logs"]["injected"].get("commit lost answer") or cell["scenario"] == "server-crash")
        ):
            reason = "commit-answer"
        else:
            reason = "unexplained"
        lost_reasons[reason].append(_describe(key, begun, timeline.fault_at))

    resume = catch_up = None
    if timeline.fault_at is not None:
        fault = timeline.fault_at
        after = [e.wall for e in mine if e.kind == "S" and e.wall > fault]
        resume = min(after) - fault if after else None
        late = [
            min(e.wall for e in done[key]) - fault
            for key, at in due.items()
            if at <= fault and done.get(key) and min(e.wall for e in done[key]) > fault
        ]
        catch_up = max(late) if late else 0.0

    return {
        "backend": cell["backend"],
        "scenario": cell["scenario"],
        "mode": mode,
        "expected": len(due),
        "once": once,
        "twice": len(doubled),
        "max_runs": max((len(runs) for runs in doubled.values()), default=1 if once else 0),
        "lost": len(lost),
        "set_aside": len(aside),
        "corrupted": len(corrupted),
        "unexpected": len(unexpected),
        "resume": resume,
        "catch_up": catch_up,
        "twice_reasons": {k: v[:10] for k, v in twice_reasons.items()},
        "twice_by_reason": {k: len(v) for k, v in twice_reasons.items()},
        "lost_reasons": {k: v[:10] for k, v in lost_reasons.items()},
        "lost_by_reason": {k: len(v) for k, v in lost_reasons.items()},
        "settled": cell["settled"],
    }


def _describe(key: Key, runs: Sequence[Event], fault_at: float | None) -> str:
    """``job_least w003n0001: done by worker 0.0 at 15:40:23.801 (0.25 s before the fault), ...``"""

    def when(wall: float) -> str:
        text = datetime.fromtimestamp(wall, timezone.utc).strftime("%H:%M:%S.%f")[:-3]
        if fault_at is not None:
            delta = wall - fault_at
            text += f" ({abs(delta):.2f} s {'after' if delta >= 0 else 'before'} the fault)"
        return text

    verbs = {"S": "started", "D": "done"}
    shown = ", ".join(
        f"{verbs[e.kind]} by worker {e.worker} at {when(e.wall)}" for e in sorted(runs, key=lambda e: e.wall)
    )
    return f"{key[0]} {key[1]}: {shown or 'never started'}"


#: Reasons that are not a documented guarantee: the matrix fails on them.
NOT_GUARANTEED = ("unexplained", "commit-answer")


def unexplained(row: Mapping[str, Any]) -> int:
    """Doubled or lost runs no documented guarantee covers."""
    return sum(int(row[f"{kind}_by_reason"].get(reason, 0)) for kind in ("twice", "lost") for reason in NOT_GUARANTEED)


# --- Markdown ----------------------------------------------------------------------------------------------

BACKEND_TITLES = {
    "sqlite": "SQLite file",
    "redis": "Redis",
    "postgres": "PostgreSQL",
    "mysql": "MariaDB",
    "dynamodb": "DynamoDB (moto)",
}


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _notes(row: Mapping[str, Any]) -> str:
    notes = list(row.get("notes", []))
    for reason, n in row.get("twice_by_reason", {}).items():
        notes.append(f"twice {n}: {REASONS[reason][1]}")
    for reason, n in row.get("lost_by_reason", {}).items():
        notes.append(f"lost {n}: {REASONS[reason][1]}")
    if row.get("max_runs", 0) > 2:
        notes.append(f"up to {row['max_runs']} runs of one")
    if row.get("unexpected"):
        notes.append(f"{row['unexpected']} unexpected run(s)")
    if row.get("worker_errors"):
        notes.append(f"{row['worker_errors']} unexpected ERROR line(s) in the workers' logs")
    if row.get("settled") is False:
        notes.append("did not settle within the cap")
    return "; ".join(notes)


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One Markdown table per scenario: a row per backend and execution mode."""
    out: list[str] = []
    by_scenario: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_scenario[row["scenario"]].append(row)
    for key, scenario in SCENARIOS.items():
        chosen = by_scenario.get(key)
        if not chosen:
            continue
        out += [
            f"#### {scenario.title[0].upper()}{scenario.title[1:]}",
            "",
            "| Backend | Mode | Expected | Once | Twice | Lost | Set aside | Resume (s) | Catch-up (s) | Notes |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|---|",
        ]
        for row in chosen:
            title = BACKEND_TITLES[row["backend"]]
            if row.get("not_applicable") or row.get("error"):
                what = "n/a" if row.get("not_applicable") else "failed"
                note = row.get("not_applicable") or row.get("error")
                out.append(f"| {title} | {row['mode']} | {what} | | | | | | | {note} |")
                continue
            out.append(
                f"| {title} | {row['mode']} | {row['expected']} | {row['once']} | {row['twice']} | {row['lost']} "
                f"| {row['set_aside']} | {_seconds(row['resume'])} | {_seconds(row['catch_up'])} | {_notes(row)} |"
            )
        out.append("")
    return "\n".join(out)


def explanations(rows: Sequence[Mapping[str, Any]]) -> str:
    """One paragraph per cell with a run doubled or lost: which runs, and the guarantee that covers them."""
    out: list[str] = []
    for row in rows:
        if row.get("not_applicable") or row.get("error") or not (row["twice"] or row["lost"]):
            continue
        scenario = SCENARIOS[row["scenario"]].title
        parts = []
        for kind, field in (("ran twice", "twice_reasons"), ("lost", "lost_reasons")):
            for reason, examples in row[field].items():
                n = row[f"{'twice' if kind == 'ran twice' else 'lost'}_by_reason"][reason]
                text, anchor = REASONS[reason]
                link = f"[{anchor}](#{anchor})" if anchor != "unexplained" else "**not covered: a bug to find**"
                parts.append(f"{n} {kind}: {text} ({link}; e.g. {examples[0]})")
        out.append(f"- **{BACKEND_TITLES[row['backend']]}, {scenario}, {row['mode']}**: " + "; ".join(parts) + ".")
    return "\n".join(out) if out else "No run ran twice or was lost."
