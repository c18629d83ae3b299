"""Shared helpers for the benchmarks: robust timing, a printed table, and recording into RESULTS.md.

Benchmarks are scripts (``python bench/<name>.py``), never tests. Each one measures its fast path
and a reference in the same process, prints a table, and replaces its own section of
``bench/RESULTS.md`` (with the date and the machine) so re-running keeps the file tidy.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

RESULTS = Path(__file__).with_name("RESULTS.md")


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1, sync: Callable[[], None] | None = None) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs.

    ``sync`` (e.g. ``torch.cuda.synchronize``) is called before each clock read on GPUs.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux/macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if platform.system() != "Darwin" else peak / 2**20


def machine() -> str:
    """One line describing the machine the numbers were taken on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} logical cores, Python {platform.python_version()}"
    try:
        import torch

        desc += f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
        if torch.cuda.is_available():
            desc += f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return desc


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (also readable when printed)."""
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def record(section: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) the ``## <section>`` block of RESULTS.md with ``body``, stamped with date and machine."""
    stamp = f"_Recorded {_dt.date.today().isoformat()} on {machine()}._"
    block = f"## {section}\n\n{stamp}\n\n{body.strip()}\n"
    text = path.read_text() if path.exists() else "# Benchmark results\n\nEach section is written by the script named in its title.\n"
    pattern = re.compile(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: block + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + block
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text.rstrip() + "\n")
    os.replace(tmp, path)
