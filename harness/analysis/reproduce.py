"""Compare a rebuilt report folder with a committed one (``prefbench report --dir NEW --compare OLD``).

A reference comparison is committed as its runs (JSON, JSON Lines and Parquet) and the report built
from them. Re-running the grid into a fresh folder and rebuilding the report must give the same tables:

- Markdown and LaTeX tables (rounded for reading) must match byte for byte;
- CSV tables (full precision) must have the same rows, columns and text cells, and numbers equal
  within a relative ``1e-6`` (absolute for values below 1e-6): a run recomputed with another thread
  count or BLAS build may differ in the last bits, never in what a reader sees;
- ``report.md`` must match except its "Built by ... in `<folder>`" line, which names the results folder.

Figures (PNG, PDF) are not compared: their bytes depend on the plotting library's version. Only the
files of the committed folder are checked, plus any table the rebuilt folder has and it lacks.
"""
from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

REL_TOL = 1e-6
BUILT_BY = re.compile(r"^Built by `prefbench report` from .*$", re.MULTILINE)


@dataclass
class Comparison:
    compared: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)  # one line each: file and first difference
    max_rel: float = 0.0  # largest relative difference over CSV numbers that were within tolerance

    @property
    def ok(self) -> bool:
        return not self.differences


def _number(cell: str) -> float | None:
    try:
        x = float(cell)
    except ValueError:
        return None
    return x if cell.strip().lower() not in ("true", "false") else None


def _compare_csv(a: str, b: str, name: str, out: Comparison) -> None:
    rows_a, rows_b = list(csv.reader(io.StringIO(a))), list(csv.reader(io.StringIO(b)))
    if len(rows_a) != len(rows_b):
        out.differences.append(f"{name}: {len(rows_b)} rows, committed {len(rows_a)}")
        return
    for i, (ra, rb) in enumerate(zip(rows_a, rows_b)):
        if len(ra) != len(rb):
            out.differences.append(f"{name}: row {i + 1} has {len(rb)} cells, committed {len(ra)}")
            return
        for j, (ca, cb) in enumerate(zip(ra, rb)):
            if ca == cb:
                continue
            xa, xb = _number(ca), _number(cb)
            col = rows_a[0][j] if rows_a and j < len(rows_a[0]) else f"column {j + 1}"
            if xa is None or xb is None or math.isnan(xa) != math.isnan(xb):
                out.differences.append(f"{name}: row {i + 1}, {col}: {cb!r}, committed {ca!r}")
                return
            rel = abs(xa - xb) / max(abs(xa), 1e-6)
            if rel > REL_TOL:
                out.differences.append(f"{name}: row {i + 1}, {col}: {cb}, committed {ca} (relative {rel:.1e})")
                return
            out.max_rel = max(out.max_rel, rel)


def _first_line_diff(a: str, b: str) -> str:
    la, lb = a.splitlines(), b.splitlines()
    for i, (x, y) in enumerate(zip(la, lb)):
        if x != y:
            return f"line {i + 1}: {y[:100]!r}, committed {x[:100]!r}"
    return f"{len(lb)} lines, committed {len(la)}"


def compare_reports(committed: Path, rebuilt: Path, tables_only: bool = False) -> Comparison:
    """Compare ``rebuilt`` with ``committed`` (see the module text); ``tables_only`` skips report.md
    (a report built without figures links none)."""
    committed, rebuilt = Path(committed), Path(rebuilt)
    out = Comparison()
    names = sorted(p.relative_to(committed).as_posix() for p in (committed / "tables").glob("*")
                   if p.suffix in (".md", ".tex", ".csv"))
    extra = sorted(p.relative_to(rebuilt).as_posix() for p in (rebuilt / "tables").glob("*")
                   if p.suffix in (".md", ".tex", ".csv") and not (committed / p.relative_to(rebuilt)).exists())
    out.differences += [f"{name}: not in the committed report" for name in extra]
    if not tables_only:
        names.append("report.md")
    for name in names:
        a_path, b_path = committed / name, rebuilt / name
        if not b_path.is_file():
            out.differences.append(f"{name}: missing from the rebuilt report")
            continue
        a, b = a_path.read_text(encoding="utf-8"), b_path.read_text(encoding="utf-8")
        out.compared.append(name)
        if name.endswith(".csv"):
            _compare_csv(a, b, name, out)
        else:
            if name == "report.md":
                a, b = BUILT_BY.sub("", a), BUILT_BY.sub("", b)
            if a != b:
                out.differences.append(f"{name}: {_first_line_diff(a, b)}")
    return out
