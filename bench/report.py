"""Writing a benchmark's results into its own section of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import signal
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Final

NEW_FILE: Final = (
    "# Benchmarks\n\n"
    "Written by the benchmarks in `bench/` (see `bench/README.md`). Each benchmark rewrites only\n"
    "its own section, between its markers; numbers depend on the machine, so each section names\n"
    "it.\n"
)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_section(path: Path, name: str, section: str) -> None:
    """Replace the section ``name`` of ``path`` with ``section`` (which carries its markers),
    or append it when absent, leaving the rest of the file alone."""
    text = path.read_text() if path.exists() else NEW_FILE
    start, end = markers(name)
    if start in text and end in text:
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def wrapped(text: str) -> str:
    """A paragraph or bullet at 100 columns, bullets' continuation lines indented."""
    indent = "  " if text.startswith("- ") else ""
    return textwrap.fill(text, width=100, subsequent_indent=indent, break_on_hyphens=False)


def setting(
    command: str, when: datetime, load: tuple[float, float, float], moment: str
) -> list[str]:
    """The machine, date and command lines that close a section; ``load`` is the load average
    at ``moment`` (e.g. "before the run")."""
    one, five, fifteen = load
    return [
        f"- Machine: {os.cpu_count()} CPUs (nproc), {platform.machine()}, "
        f"{platform.system()} {platform.release()}; {platform.python_implementation()} "
        f"{platform.python_version()}; load average {moment} {one:.1f} / {five:.1f} / "
        f"{fifteen:.1f}.",
        f"- Date: {when:%Y-%m-%d %H:%M} UTC.",
        f"- Command: `{command}`",
    ]


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so that what a benchmark started is stopped on the way
    out, as on Ctrl-C."""

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)
