"""The results store: one folder per run, one format for every algorithm.

``<results>/<suite>/<run-id>/`` holds
- ``config.json``  the resolved config: suite (name, version, hash, preset), algorithm, variant,
  hyperparameters, seed, evaluation protocol, artifact hashes, library versions and hardware;
- ``train_log.jsonl`` one JSON object per training step;
- ``samples.parquet`` the per-sample evaluation table;
- ``metrics.json`` status (ok / diverged / failed), the metrics, timings, and the trajectory of
  intermediate evaluations.
A run is written under ``<results>/<suite>/.staging/`` and renamed into place when complete, so a
run folder that exists is a finished run; the report reads nothing else. Only JSON and Parquet are
read back (never pickle). Names are checked so nothing is written outside the results folder.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from harness.core.errors import UserError
from harness.suites.spec import NAME_RE

STORE_MARKER = ".prefbench-results"
LAYOUT_VERSION = 1


class ResultsStore:
    def __init__(self, root: Path | str, where: str = "--results"):
        self.root = Path(root)
        self.where = where
        self._said: set[Path] = set()  # unreadable runs already reported by is_complete

    # ------------------------------------------------------------------ safety
    def prepare(self) -> None:
        """Create (or adopt) the results folder; refuse foreign or read-only ones before any compute."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise UserError(self.where, str(root), "exists and is not a folder")
        marker = root / STORE_MARKER
        if root.is_dir() and not marker.exists():
            foreign = [p.name for p in root.iterdir() if not p.name.startswith(".") and p.name not in ("README.md",)]
            if foreign:
                raise UserError(self.where, str(root), f"not a prefbench results folder (holds {foreign[0]!r} "
                                "and no .prefbench-results marker); choose an empty or prefbench folder")
        try:
            root.mkdir(parents=True, exist_ok=True)
            if not marker.exists():
                marker.write_text(json.dumps({"layout": LAYOUT_VERSION}) + "\n")
            probe = root / f".write-probe-{os.getpid()}-{uuid.uuid4().hex[:6]}"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise UserError(self.where, str(root), f"not writable ({e.strerror or e})") from None

    def _safe(self, *parts: str) -> Path:
        for p in parts:
            if not NAME_RE.fullmatch(p):
                raise UserError(self.where, p, "unsafe name; allowed: letters, digits, '_', '-', '.'")
        path = self.root.joinpath(*parts).resolve()
        if not str(path).startswith(str(self.root.resolve()) + os.sep):
            raise UserError(self.where, "/".join(parts), "resolves outside the results folder")
        return path

    # ------------------------------------------------------------------ runs
    def run_dir(self, suite: str, run_id: str) -> Path:
        return self._safe(suite, run_id)

    def is_complete(self, suite: str, run_id: str) -> bool:
        """Committed and not ``failed`` (failed runs are retried; diverged ones are results). A run whose
        metrics.json is unreadable is not complete: it is said so on stderr, and the run is redone."""
        path = self.run_dir(suite, run_id) / "metrics.json"
        if not path.is_file():
            return False
        try:
            status = read_run_metrics(path).get("status")
        except UnreadableRun as e:
            if path not in self._said:
                self._said.add(path)
                print(f"prefbench: {path.parent}: {e}; redoing the run", file=sys.stderr, flush=True)
            return False
        return status != "failed"

    def checkpoint_dir(self, suite: str, run_id: str) -> Path:
        """Where a run's mid-training checkpoint lives (kept across restarts, removed at commit)."""
        self._safe(suite, run_id)
        return self._safe(suite) / ".checkpoints" / run_id

    def staging_dir(self, suite: str, run_id: str) -> Path:
        self._safe(suite, run_id)
        d = self._safe(suite) / ".staging" / f"{run_id}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        d.mkdir(parents=True)
        return d

    def commit(self, staging: Path, suite: str, run_id: str) -> Path:
        """Atomically publish a finished run (replacing an older one when a run was forced)."""
        final = self.run_dir(suite, run_id)
        if final.exists():
            trash = final.parent / ".staging" / f"{run_id}.replaced.{uuid.uuid4().hex[:6]}"
            os.rename(final, trash)
            os.rename(staging, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(staging, final)
        return final

    @contextmanager
    def claim(self, suite: str, run_id: str):
        """Claim a run for this process (yields True) or learn that a live process holds it (False).

        The claim is an exclusive ``flock`` on ``<suite>/.locks/<run-id>.lock``: the kernel drops it
        when its holder dies, SIGKILL included, so a stale claim can never block a restart. Once
        claimed, staging folders of earlier, dead attempts at this run are removed.
        """
        self._safe(suite, run_id)
        locks = self._safe(suite) / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(locks / f"{run_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            staging = self._safe(suite) / ".staging"
            if staging.is_dir():
                for old in staging.glob(f"{run_id}.*"):
                    shutil.rmtree(old, ignore_errors=True)
            yield True
        finally:
            os.close(fd)  # closing releases the lock

    def iter_runs(self, suite: str | None = None) -> Iterator[Path]:
        if not self.root.is_dir():
            return
        try:
            suites = [self.root / suite] if suite else sorted(p for p in self.root.iterdir() if p.is_dir())
        except OSError:  # unreadable folder: nothing to list
            return
        for sdir in suites:
            try:
                if not sdir.is_dir() or sdir.name.startswith((".", "_")):
                    continue
                runs = sorted(sdir.iterdir())
            except (OSError, ValueError):
                continue
            for run in runs:
                try:
                    ok = run.is_dir() and not run.name.startswith((".", "_")) and (run / "metrics.json").is_file()
                except OSError:
                    ok = False
                if ok:
                    yield run


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, default=_json_default) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text())


class UnreadableRun(Exception):
    """A committed run folder whose files cannot be read back (truncated, corrupt, wrong shape); the
    message names the file and the problem in a few words."""


def read_json_file(path: Path, required: tuple[str, ...] = ()) -> dict:
    """A run's JSON object file, or :class:`UnreadableRun` (``"metrics.json: invalid JSON"``)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise UnreadableRun(f"{path.name}: unreadable ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise UnreadableRun(f"{path.name}: not UTF-8") from None
    except (ValueError, RecursionError):
        raise UnreadableRun(f"{path.name}: invalid JSON") from None
    if not isinstance(obj, dict):
        raise UnreadableRun(f"{path.name}: not a JSON object")
    missing = [k for k in required if k not in obj]
    if missing:
        raise UnreadableRun(f"{path.name}: missing {', '.join(missing)}")
    return obj


def read_run_metrics(path: Path) -> dict:
    """metrics.json of a committed run, checked for the fields every reader relies on."""
    m = read_json_file(path, ("run_id", "suite", "algorithm", "seed"))
    if not isinstance(m["seed"], int) or isinstance(m["seed"], bool):
        raise UnreadableRun(f"{Path(path).name}: seed is not an integer")
    if not all(isinstance(m[k], str) for k in ("run_id", "suite", "algorithm")):
        raise UnreadableRun(f"{Path(path).name}: run_id, suite and algorithm must be strings")
    if m.get("status", "failed") not in ("ok", "diverged", "failed"):
        raise UnreadableRun(f"{Path(path).name}: unknown status {str(m['status'])[:20]!r}")
    return m


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
