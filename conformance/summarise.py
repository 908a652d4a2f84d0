"""Summarise Autobahn|Testsuite reports: counts, the cases that are not OK, a verdict.

Usage::

    python conformance/summarise.py conformance/reports/server conformance/reports/client

Each argument is a report directory (holding ``index.json``) or an ``index.json``. For
every agent in it, prints the counts by behavior and by closing behavior, then every case
whose behavior or closing behavior is not OK (or INFORMATIONAL) with its description, its
expectation and what happened. Exits with 1 when a case FAILED, is NON-STRICT or
UNIMPLEMENTED (rue_trio implements permessage-deflate, so its cases must run), or closed
the wrong way (FAILED, WRONG CODE, UNCLEAN, FAILED BY CLIENT); 2 when a report is missing
or unreadable; 0 otherwise. Standard library only.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

BEHAVIORS = ("OK", "NON-STRICT", "FAILED", "INFORMATIONAL", "UNIMPLEMENTED")
CLOSE_BEHAVIORS = ("OK", "FAILED", "WRONG CODE", "UNCLEAN", "FAILED BY CLIENT", "INFORMATIONAL")
PASSING = frozenset({"OK", "INFORMATIONAL"})
BAD_BEHAVIORS = frozenset({"FAILED", "NON-STRICT", "UNIMPLEMENTED"})
BAD_CLOSE_BEHAVIORS = frozenset({"FAILED", "WRONG CODE", "UNCLEAN", "FAILED BY CLIENT"})
_TAG = re.compile(r"<[^>]+>")
# The most characters of one field printed: the expected events can run to kilobytes.
_LONGEST = 400


def case_key(case_id: str) -> tuple[int, ...]:
    """Sort key of a case id: ``"9.1.10"`` after ``"9.1.9"``.

    Args:
        case_id: a dotted case id.

    Returns:
        Its numbers.
    """
    return tuple(int(part) for part in case_id.split(".") if part.isdigit())


def plain(text: object) -> str:
    """A report's field as one line of plain text: tags dropped, entities decoded.

    Args:
        text: the field.

    Returns:
        The text.
    """
    return " ".join(html.unescape(_TAG.sub(" ", str(text))).split())


def index_path(argument: str) -> Path:
    """The ``index.json`` an argument names, directly or as its directory.

    Args:
        argument: a report directory or an ``index.json``.

    Returns:
        The path of the ``index.json``.
    """
    path = Path(argument)
    return path / "index.json" if path.is_dir() else path


def describe(report_dir: Path, entry: dict[str, Any]) -> list[str]:
    """The lines that explain one case, from its own report file when it is there.

    Args:
        report_dir: the directory of the index.
        entry: the case's entry in the index.

    Returns:
        Indented lines: description, expectation, the events expected and received, the
        result, the closing result and the close codes.
    """
    path = report_dir / str(entry.get("reportfile", ""))
    try:
        case = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [f"      (no case report at {path})"]
    lines = []
    for field in ("description", "expectation", "expected", "received", "result", "resultClose"):
        if case.get(field):
            text = plain(case[field])
            if len(text) > _LONGEST:
                text = text[: _LONGEST - 3] + "..."
            lines.extend(
                textwrap.wrap(
                    f"{field}: {text}",
                    width=96,
                    initial_indent="      ",
                    subsequent_indent="        ",
                )
            )
    close = [
        f"{name}={case[name]}"
        for name in ("localCloseCode", "remoteCloseCode", "wasNotCleanReason")
        if case.get(name) is not None
    ]
    if close:
        lines.append("      " + ", ".join(close))
    return lines


def summarise_agent(report_dir: Path, agent: str, cases: dict[str, dict[str, Any]]) -> bool:
    """Print one agent's counts and its cases that are not OK.

    Args:
        report_dir: the directory of the index.
        agent: the agent's name.
        cases: the index's entries for the agent, by case id.

    Returns:
        Whether the agent passes: no bad behavior and no bad closing behavior.
    """
    behaviors = Counter(str(entry.get("behavior")) for entry in cases.values())
    closes = Counter(str(entry.get("behaviorClose")) for entry in cases.values())
    print(f"== {agent} ({report_dir}): {len(cases)} cases")
    for title, counts, known in (
        ("behavior", behaviors, BEHAVIORS),
        ("behaviorClose", closes, CLOSE_BEHAVIORS),
    ):
        names = [*known, *sorted(set(counts) - set(known))]
        print(f"   {title:14}" + "  ".join(f"{name} {counts[name]}" for name in names))
    passed = True
    for case_id in sorted(cases, key=case_key):
        entry = cases[case_id]
        behavior = str(entry.get("behavior"))
        close = str(entry.get("behaviorClose"))
        if behavior in PASSING and close in PASSING:
            continue
        passed = passed and behavior not in BAD_BEHAVIORS and close not in BAD_CLOSE_BEHAVIORS
        print(f"   {case_id:9} {behavior} (close {close})")
        for line in describe(report_dir, entry):
            print(line)
    return passed


def main(argv: list[str] | None = None) -> int:
    """Summarise the reports named on the command line.

    Args:
        argv: the arguments, ``sys.argv[1:]`` by default.

    Returns:
        The exit status: 0 all pass, 1 a case does not, 2 a report is missing.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", help="report directories or index.json files")
    args = parser.parse_args(argv)
    status = 0
    for argument in args.reports:
        path = index_path(argument)
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"== {path}: no readable report ({exc})")
            status = 2
            continue
        if not index:
            print(f"== {path}: the report holds no agent")
            status = 2
        for agent in sorted(index):
            if not summarise_agent(path.parent, agent, index[agent]) and status == 0:
                status = 1
    print("RESULT:", {0: "pass", 1: "FAIL", 2: "INCOMPLETE"}[status])
    return status


if __name__ == "__main__":
    sys.exit(main())
