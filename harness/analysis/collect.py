"""Reading run folders into tidy frames and aligned arrays. JSON, JSONL and Parquet only (no torch).

A *block* is one comparable configuration: the same suite and suite version, preset, π_SFT, pairs
and baseline artifacts (content hashes), sampler and judge. Its runs share the evaluation prompts
(``prompt_index``) and the π_SFT baseline samples, so per-prompt comparisons between any two of its
runs are paired. Runs that differ in any of these never share a block, hence never a row, a paired
test or a frontier. Inside a block, a *group* is one (algorithm, variant, hyperparameters): the unit
that is aggregated over seeds.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from harness.core.hashing import canonical_json
from harness.execution.results import ResultsStore, UnreadableRun, read_json_file, read_run_metrics

REFERENCE = "reference"
# per-prompt columns read from samples.parquet (mean over the samples of a prompt)
PROMPT_COLUMNS = ("gold_reward", "win", "kl", "length", "baseline_length", "baseline_reward", "finished")
SAMPLE_COLUMNS = ("prompt_index",) + PROMPT_COLUMNS
# final metrics copied from metrics.json into the run table
RUN_METRICS = ("gold_reward", "win_rate", "kl", "kl_k1", "kl_k3", "kl_per_token", "length", "baseline_length",
               "truncation_rate", "distinct_2", "n_prompts", "n_samples", "wins", "ties", "losses", "judge_unresolved")
POINT_METRICS = ("gold_reward", "win_rate", "kl", "length")
# how hyperparameter names are shown in labels
HP_SYMBOLS = {"beta": "β", "label_smoothing": "ε", "lr": "lr"}
# what makes runs comparable (see the module docstring); every one of these is part of a block's key
BLOCK_KEY = ("suite", "suite_version", "preset", "artifacts_json", "sampler", "judge_json")


def varying_hyperparameters(runs: pd.DataFrame) -> dict[str, list[str]]:
    """Per algorithm, the hyperparameters that differ between its runs (shown in labels)."""
    out = {}
    for algo, g in runs.groupby("algorithm"):
        dicts = g.hyperparameters.tolist()
        keys = sorted({k for d in dicts for k in d})
        out[algo] = [k for k in keys if len({json.dumps(d.get(k), sort_keys=True) for d in dicts}) > 1]
    return out


@dataclass
class Block:
    suite: str
    preset: str
    runs: pd.DataFrame  # one row per run, index 0..n-1 (row i <-> row i of the per-prompt arrays)
    groups: pd.DataFrame  # one row per group, index = group id, in display order (reference first)
    prompts: np.ndarray  # prompt ids (columns of the per-prompt arrays)
    per_prompt: dict[str, np.ndarray]  # column -> [n_runs, n_prompts], NaN where a run has no samples
    samples: dict[str, np.ndarray]  # flat per-sample arrays: run, prompt (column position), win, dlen
    points: pd.DataFrame  # evaluations along training: run, group, step, final, POINT_METRICS
    hp_keys: dict[str, list[str]] = field(default_factory=dict)  # algorithm -> varying hyperparameters
    key: str = ""  # content hash of the block's identity (BLOCK_KEY)
    identity: dict = field(default_factory=dict)  # BLOCK_KEY field -> value
    tag: str = ""  # set when several blocks share (suite, preset): tells them apart in names and files
    _train_logs: dict = field(default_factory=dict, repr=False, compare=False)  # run -> frame, read once

    @property
    def name(self) -> str:
        v = self.identity.get("suite_version")
        base = f"{self.suite} v{v}/{self.preset}" if v not in (None, "") else f"{self.suite}/{self.preset}"
        return f"{base} [{self.tag}]" if self.tag else base

    @property
    def file_prefix(self) -> str:
        return f"{self.suite}-{self.preset}" + (f"-{self.tag}" if self.tag else "")

    @property
    def reference_group(self) -> int | None:
        ids = self.groups.index[self.groups.algorithm == REFERENCE]
        return int(ids[0]) if len(ids) else None

    def train_log(self, run: int) -> pd.DataFrame:
        """The run's train_log.jsonl as a frame (empty when the run logged nothing). Read once per block
        (the training-curve and gradient-weight figures both ask); callers must not modify it."""
        if run not in self._train_logs:
            self._train_logs[run] = self._read_train_log(run)
        return self._train_logs[run]

    def _read_train_log(self, run: int) -> pd.DataFrame:
        path = Path(self.runs.path.iloc[run]) / "train_log.jsonl"
        if not path.is_file():
            return pd.DataFrame()
        rows = []
        try:  # split on "\n" only: str.splitlines also splits inside strings at U+2028 and friends
            lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")
        except OSError:
            return pd.DataFrame()
        for line in lines:
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a torn or corrupt line: the curves show the steps that can be read
                if isinstance(row, dict):
                    rows.append(row)
        return pd.DataFrame(rows)


def count_text(values) -> str:
    """3 -> "3"; {2, 3} -> "2–3" (counts that differ between configurations)."""
    v = sorted(set(int(x) for x in values))
    return "–" if not v else str(v[0]) if len(v) == 1 else f"{v[0]}–{v[-1]}"


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def hp_label(hp: dict, keys: list[str]) -> str:
    return ", ".join(f"{HP_SYMBOLS.get(k, k)}={_fmt_value(hp.get(k))}" for k in keys)


def group_label(algorithm: str, variant: str, hp: dict, keys: list[str]) -> str:
    if algorithm == REFERENCE:
        return "reference (π_SFT)"
    name = algorithm if variant in (None, "", algorithm) else f"{algorithm}/{variant}"
    extra = hp_label(hp, keys)
    return f"{name} {extra}" if extra else name


def _sort_value(v):
    """Hyperparameter values in a sort key: numbers before strings, numbers numerically."""
    if isinstance(v, bool) or v is None:
        return (1, str(v))
    if isinstance(v, (int, float)):
        return (0, float(v))
    return (1, str(v))


def metrics_of(m: dict) -> dict:
    return m.get("metrics") or {}


def _float(v, default) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return float(default) if default is not None else np.nan


def _dict(v) -> dict:
    return v if isinstance(v, dict) else {}


def _read_run(path: Path) -> dict:
    """One run's row; :class:`UnreadableRun` when metrics.json or config.json is corrupt."""
    m = read_run_metrics(path / "metrics.json")
    cfg_path = path / "config.json"
    cfg = read_json_file(cfg_path) if cfg_path.is_file() else {}
    traj = m.get("trajectory") or []
    if not isinstance(traj, list) or not all(isinstance(t, dict) and isinstance(t.get("step", 0), int)
                                             and not isinstance(t.get("step", 0), bool) for t in traj):
        raise UnreadableRun("metrics.json: trajectory is not a list of {step: integer, ...} objects")
    if not isinstance(m.get("hyperparameters") or {}, dict):
        raise UnreadableRun("metrics.json: hyperparameters is not an object")
    suite_cfg = _dict(cfg.get("suite"))
    ev = _dict(suite_cfg.get("evaluation"))
    preset_cfg = _dict(cfg.get("preset"))
    failure = _dict(m.get("failure"))
    extra = _dict(m.get("extra"))
    m["metrics"] = _dict(m.get("metrics"))
    versions = _dict(m.get("library_versions") or cfg.get("library_versions"))
    row = {
        "run_id": m["run_id"], "suite": m["suite"], "preset": str(m.get("preset") or cfg.get("preset_name") or "?"),
        "algorithm": m["algorithm"], "variant": m.get("variant") or m["algorithm"],
        "hyperparameters": m.get("hyperparameters") or {}, "hp_json": canonical_json(m.get("hyperparameters") or {}),
        "seed": int(m["seed"]), "status": m.get("status", "failed"),
        "failure_step": failure.get("step"), "failure_reason": failure.get("reason"),
        "train_steps": extra.get("train_steps"), "path": str(path),
        "versions": versions, "versions_json": canonical_json(versions),
        "judge_json": canonical_json(cfg.get("judge") or suite_cfg.get("judge") or {}),
        "eval_json": canonical_json(ev), "temperature": ev.get("temperature"),
        "max_new_tokens": ev.get("max_new_tokens"), "samples_per_prompt": ev.get("samples_per_prompt"),
        "eval_prompts": preset_cfg.get("eval_prompts"), "sampler": cfg.get("sampler"),
        "artifacts_json": canonical_json(cfg.get("artifacts") or {}),
        "pairs_load_json": canonical_json(cfg.get("pairs_load") or {}),  # a dataset's load counts (protocol)
        "hardware_json": canonical_json(cfg.get("hardware") or {}), "git_commit": cfg.get("git_commit"),
        "resources_json": canonical_json(_dict(m.get("resources"))),  # device, precision, GPU (resource settings)
        "suite_version": str(m.get("suite_version", suite_cfg.get("version"))),
        "kl_kind": str(metrics_of(m).get("kl_kind") or "exact"),
        # the win rates' opponent: π_SFT's samples, or the dataset's responses (evaluation.baseline)
        "win_baseline": str(ev.get("baseline") or "policy"),
        "kl_temperature": _float(metrics_of(m).get("kl_temperature"), ev.get("temperature", 1.0)),
        "kl_upper_bound": _float(extra.get("kl_upper_bound"), np.nan),
        "rm_valid_accuracy": _float(extra.get("rm_valid_accuracy"), np.nan),
        "trajectory": m.get("trajectory") or [],
    }
    metrics = m.get("metrics") or {}
    for k in RUN_METRICS:
        v = metrics.get(k)
        row[k] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan
    return row


def _read_samples(path: Path) -> dict[str, np.ndarray] | None:
    """samples.parquet as float arrays; :class:`UnreadableRun` when it is corrupt or malformed."""
    import pyarrow as pa

    f = path / "samples.parquet"
    if not f.is_file():
        return None
    try:
        have = set(pq.read_schema(f).names)
        if "prompt_index" not in have:
            raise UnreadableRun("samples.parquet: no prompt_index column")
        cols = [c for c in SAMPLE_COLUMNS if c in have]
        t = pq.read_table(f, columns=cols)
        out = {c: np.asarray(t.column(c).to_numpy(), dtype=np.float64) for c in cols}
    except UnreadableRun:
        raise
    except (OSError, ValueError, TypeError, pa.ArrowException) as e:
        raise UnreadableRun(f"samples.parquet: {_short(e)}") from None
    pi = out["prompt_index"]
    if pi.size and (not np.isfinite(pi).all() or (pi < 0).any() or (pi != np.round(pi)).any()):
        raise UnreadableRun("samples.parquet: prompt_index is not non-negative integers")
    n = len(out["prompt_index"])
    for c in SAMPLE_COLUMNS:
        out.setdefault(c, np.full(n, np.nan))
    return out


def collect_blocks(results_root: Path | str, suite: str | None = None,
                   run_ids: set[str] | None = None) -> list[Block]:
    """Every committed run under ``results_root`` (optionally one suite, or only ``run_ids``), split
    into blocks of comparable runs."""
    from harness.core.hashing import content_hash

    rows, samples, bad = [], {}, []
    for p in ResultsStore(results_root).iter_runs(suite):
        if run_ids is not None and p.name not in run_ids:  # a run's folder is named by its id
            continue
        try:
            row = _read_run(p)
            if run_ids is not None and row["run_id"] not in run_ids:
                continue
            if row["status"] == "ok":
                samples[row["path"]] = _read_samples(p)
        except UnreadableRun as e:
            bad.append((p, str(e)))
            continue
        rows.append(row)
    report_unreadable(Path(results_root), bad)
    if not rows:
        return []
    runs = pd.DataFrame(rows)
    for c in BLOCK_KEY:
        runs[c] = runs[c].map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    blocks = []
    for values, r in runs.groupby(list(BLOCK_KEY), sort=True):
        identity = dict(zip(BLOCK_KEY, values))
        b = _make_block(identity["suite"], identity["preset"], r.reset_index(drop=True), samples)
        b.identity, b.key = identity, content_hash(identity, 8)
        blocks.append(b)
    # blocks that share (suite, preset) are told apart by their key, in names and file prefixes
    per_name = pd.Series([(b.suite, b.preset) for b in blocks]).value_counts()
    for b in blocks:
        if per_name[(b.suite, b.preset)] > 1:
            b.tag = b.key[:6]
    return blocks


_REPORTED: set[str] = set()  # unreadable run folders already reported by this process


def _short(e: Exception) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 80 else text[:79] + "…"


def report_unreadable(root: Path, bad: list[tuple[Path, str]]) -> None:
    """One stderr line per unreadable run (once per process), then the count. The runs are skipped:
    the readable ones still make every table."""
    import sys

    new = [(p, why) for p, why in bad if str(p) not in _REPORTED]
    for p, why in new:
        _REPORTED.add(str(p))
        print(f"prefbench: skipped unreadable run {p.parent.name}/{p.name} ({why})", file=sys.stderr)
    if new:
        print(f"prefbench: skipped {len(new)} unreadable run{'s' if len(new) > 1 else ''} in {root}", file=sys.stderr,
              flush=True)


def split_halves(block: Block, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of the block's evaluation prompts (boolean masks over ``block.prompts``), by a
    seeded permutation of the prompt ids: the same split for every run of the block."""
    rng = np.random.default_rng([seed, 0x5E1EC7])
    order = rng.permutation(len(block.prompts))
    select = np.zeros(len(block.prompts), dtype=bool)
    select[order[: len(order) // 2]] = True
    return select, ~select


def restrict(block: Block, keep: np.ndarray) -> Block:
    """The block seen through a subset of its evaluation prompts (``keep``: mask over ``block.prompts``).
    Per-prompt arrays and samples are cut; run-level truncation is recomputed from the kept prompts.
    Evaluations along training (``points``) cover all prompts and are left out."""
    import copy

    pos_new = np.cumsum(keep) - 1
    per_prompt = {c: a[:, keep] for c, a in block.per_prompt.items()}
    s = block.samples
    m = keep[s["prompt"].astype(np.intp)] if s["prompt"].size else np.zeros(0, dtype=bool)
    samples = {k: v[m] for k, v in s.items()}
    if samples["prompt"].size:
        samples["prompt"] = pos_new[samples["prompt"].astype(np.intp)]
    runs = block.runs.copy()
    fin = per_prompt["finished"]
    with np.errstate(invalid="ignore"):
        has = (~np.isnan(fin)).sum(axis=1) > 0
        runs.loc[has, "truncation_rate"] = 1.0 - np.nanmean(fin[has], axis=1)
    out = copy.copy(block)
    out.runs, out.per_prompt, out.samples, out.prompts = runs, per_prompt, samples, block.prompts[keep]
    out.points = block.points.iloc[0:0]
    return out


def identity_differences(blocks: list[Block]) -> dict[str, list[str]]:
    """For blocks sharing (suite, preset): per block key, which identity fields set it apart."""
    out = {}
    for b in blocks:
        others = [o for o in blocks if o is not b and (o.suite, o.preset) == (b.suite, b.preset)]
        out[b.key] = sorted({k for o in others for k in BLOCK_KEY if o.identity.get(k) != b.identity.get(k)})
    return out


def _make_block(suite: str, preset: str, runs: pd.DataFrame, samples_by_path: dict | None = None) -> Block:
    keys = varying_hyperparameters(runs)
    # groups in display order: reference first, then by algorithm, variant and the varying values
    gkeys = {}
    for i, r in runs.iterrows():
        gkeys.setdefault((r.algorithm, r.variant, r.hp_json), []).append(i)

    def order(k):
        algo, variant, hp_json = k
        hp = runs.hyperparameters[gkeys[k][0]]
        return (algo != REFERENCE, algo, variant, tuple(_sort_value(hp.get(x)) for x in keys.get(algo, [])), hp_json)

    groups = []
    runs["group"] = -1
    for gid, k in enumerate(sorted(gkeys, key=order)):
        algo, variant, hp_json = k
        idx = sorted(gkeys[k], key=lambda i: runs.seed[i])
        runs.loc[idx, "group"] = gid
        hp = runs.hyperparameters[idx[0]]  # the run's own dict: hp_json holds floats as strings
        ok = [i for i in idx if runs.status[i] == "ok"]
        groups.append({"group": gid, "algorithm": algo, "variant": variant, "hp_json": hp_json, "hp": hp,
                       "hp_label": hp_label(hp, keys.get(algo, [])),
                       "label": group_label(algo, variant, hp, keys.get(algo, [])),
                       "runs": idx, "ok_runs": ok, "seeds": [int(runs.seed[i]) for i in idx],
                       "ok_seeds": [int(runs.seed[i]) for i in ok], "n_runs": len(idx), "n_ok": len(ok)})
    groups = pd.DataFrame(groups).set_index("group", drop=False)

    # samples -> per-prompt arrays aligned on the union of prompt ids
    read = (lambda p: samples_by_path[p]) if samples_by_path is not None else (lambda p: _read_samples(Path(p)))
    data = [read(p) if s == "ok" else None for p, s in zip(runs.path, runs.status)]
    prompt_ids = np.unique(np.concatenate([d["prompt_index"] for d in data if d is not None] or [np.empty(0)]))
    n_runs, n_prompts = len(runs), len(prompt_ids)
    per_prompt = {c: np.full((n_runs, n_prompts), np.nan) for c in PROMPT_COLUMNS}
    flat = {"run": [], "prompt": [], "win": [], "dlen": []}
    for i, d in enumerate(data):
        if d is None or len(d["prompt_index"]) == 0:
            continue
        pos = np.searchsorted(prompt_ids, d["prompt_index"])
        cnt = np.bincount(pos, minlength=n_prompts).astype(np.float64)
        has = cnt > 0
        for c in PROMPT_COLUMNS:
            v = d[c]
            okv = ~np.isnan(v)
            tot = np.bincount(pos[okv], weights=v[okv], minlength=n_prompts)
            num = np.bincount(pos[okv], minlength=n_prompts)
            with np.errstate(invalid="ignore", divide="ignore"):
                per_prompt[c][i] = np.where(has & (num > 0), tot / num, np.nan)
        flat["run"].append(np.full(len(pos), i))
        flat["prompt"].append(pos)
        flat["win"].append(d["win"])
        flat["dlen"].append(d["length"] - d["baseline_length"])
    samples = {k: (np.concatenate(v) if v else np.empty(0)) for k, v in flat.items()}

    # evaluation points: the trajectory plus the final evaluation at extra.train_steps
    pts = []
    for i, r in runs.iterrows():
        last = 0
        for t in r.trajectory:
            step = int(t.get("step", 0))
            last = max(last, step)
            pts.append({"run": i, "group": r.group, "step": step, "final": False,
                        **{k: float(t[k]) if isinstance(t.get(k), (int, float)) else np.nan for k in POINT_METRICS}})
        if r.status == "ok":
            step = r.train_steps if isinstance(r.train_steps, (int, float)) and r.train_steps == r.train_steps else last
            pts.append({"run": i, "group": r.group, "step": int(step), "final": True,
                        **{k: float(r[k]) for k in POINT_METRICS}})
    points = pd.DataFrame(pts, columns=["run", "group", "step", "final", *POINT_METRICS])
    runs = runs.drop(columns=["trajectory"])
    return Block(suite, preset, runs, groups, prompt_ids, per_prompt, samples, points, keys)
