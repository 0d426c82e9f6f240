"""report.md: the protocol (judge, reference, temperature, prompts, seeds, library versions), the
headline numbers, and every table and figure of the report folder with how to read it."""
from __future__ import annotations

import json
from pathlib import Path


from harness.analysis import tables as T
from harness.analysis.collect import HP_SYMBOLS, Block, count_text
from harness.analysis.options import Options


def _distinct(block: Block, col: str) -> list:
    vals = []
    for v in block.runs[col].dropna():
        if v not in vals:
            vals.append(v)
    return vals


def _json_text(s: str) -> str:
    try:
        d = json.loads(s)
    except (TypeError, ValueError):
        return str(s)
    if isinstance(d, dict):
        return ", ".join(f"{k}={v}" for k, v in d.items()) or "–"
    return str(d)


def _versions_section(block: Block) -> list[str]:
    runs = block.runs
    keys = sorted({k for v in runs.versions for k in v})
    lines = ["| package | version | runs |", "|---|---|---|"]
    differ = []
    for k in keys:
        vals = {}
        for v in runs.versions:
            vals[v.get(k, "–")] = vals.get(v.get(k, "–"), 0) + 1
        if len(vals) > 1:
            differ.append(k)
        for ver, n in vals.items():
            flag = " ⚠" if len(vals) > 1 else ""
            lines.append(f"| {k}{flag} | {ver} | {n}/{len(runs)} |")
    out = []
    if differ:
        out.append(f"> ⚠ **Runs in this report were produced by different library versions** ({', '.join(differ)}). "
                   "Comparisons between such runs are flagged in the pairwise table (column *versions*) and "
                   "configurations mixing versions are marked ⚠ in the summary.")
        out.append("")
    return out + lines


def _glance(block: Block, r: dict, opts: Options) -> list[str]:
    t = r["gs"].table
    live = t[t.n_seeds > 0]
    out = []
    if live.empty:
        return ["- No run finished with status ok."]
    for m, name in (("win_rate", f"win rate vs {T.win_opponent(t)}"), ("gold_reward", "gold reward")):
        b = live[m].idxmax()
        x = live.loc[b]
        out.append(f"- Highest {name}: **{x.label}**, {x[m]:.3f} {T.ci(x[f'{m}_ci_low'], x[f'{m}_ci_high'])} "
                   f"(KL {x.kl:.2f} nats, length {x.length:.1f} tokens, {x.n_seeds} seeds).")
    ref = block.reference_group
    if ref is not None and ref in live.index:
        x = live.loc[ref]
        out.append(f"- π_SFT against its own baseline sample (a null comparison): win rate {x.win_rate:.3f} "
                   f"{T.ci(x.win_rate_ci_low, x.win_rate_ci_high)}, KL {x.kl:.3f} nats.")
    for algo in r["swept"]:
        keys = block.hp_keys.get(algo, [])
        if len(keys) != 1:
            continue
        k = keys[0]
        g = live[live.algorithm == algo].copy()
        g["_v"] = [block.groups.hp[i].get(k) for i in g.index]
        try:
            g = g.sort_values("_v")
        except TypeError:
            continue
        sym = HP_SYMBOLS.get(k, k)
        vals = " → ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in g._v)
        kl = " → ".join(f"{v:.2f}" for v in g.kl)
        wr = " → ".join(f"{v:.3f}" for v in g.win_rate)
        gr = " → ".join(f"{v:.3f}" for v in g.gold_reward)
        ln = " → ".join(f"{v:.1f}" for v in g.length)
        out.append(f"- {algo}, as {sym} goes {vals}: KL {kl} nats; win rate {wr}; gold reward {gr}; "
                   f"length {ln} tokens.")
    n_fail = int(t.n_failures.sum())
    n_runs = int(t.n_runs.sum())
    if n_fail:
        which = "; ".join(f"{x.label}: {x.n_failures}/{x.n_runs}" for _, x in t[t.n_failures > 0].iterrows())
        out.append(f"- {n_fail} of {n_runs} runs met a failure criterion ({which}); see the failures table.")
    else:
        out.append(f"- None of the {n_runs} runs met a failure criterion.")
    return out


def _fig(lines: list[str], files: list[Path] | None, root: Path, alt: str, text: str) -> None:
    if not files:
        return
    png = next((p for p in files if p.suffix == ".png"), files[0])
    others = ", ".join(f"[{p.suffix[1:].upper()}]({p.relative_to(root).as_posix()})" for p in files)
    lines += [f"![{alt}]({png.relative_to(root).as_posix()})", "", f"*{text}* ({others})", ""]


def _table(lines: list[str], tab: T.Table | None, paths: list[Path] | None, root: Path) -> None:
    if tab is None:
        return
    lines += [T.to_markdown(tab), f"*{tab.caption}*"]
    if paths:
        lines[-1] += " (" + ", ".join(f"[{p.suffix[1:]}]({p.relative_to(root).as_posix()})" for p in paths) + ")"
    lines.append("")


def _pairs_load_lines(block: Block) -> list[str]:
    """The protocol line of a preference dataset's load (pairs.kind dataset): rows, drops and their reasons,
    the length policy's counts, the gold check."""
    if "pairs_load_json" not in block.runs:
        return []
    out = []
    for text in _distinct(block, "pairs_load_json"):
        d = json.loads(text)
        if not d:
            continue
        line = (f"- **Pairs**: {d.get('source')} split {d.get('split')}, format {d.get('format')}: {d.get('rows')} rows; "
                f"dropped {d.get('empty')} with an empty text, {d.get('identical')} with chosen = rejected, "
                f"{d.get('duplicates')} duplicates; {d.get('pairs_selected')} pairs of the preset's prompts; length "
                f"policy {d.get('length_policy')} (prompt ≤ {d.get('max_prompt_tokens')}, response ≤ "
                f"{d.get('max_response_tokens')} tokens): {d.get('dropped_length')} dropped, {d.get('truncated')} "
                f"truncated; {d.get('pairs')} pairs")
        if "gold_chosen_mean" in d:
            line += (f"; gold check: mean gold reward chosen {float(d['gold_chosen_mean']):.4g} vs rejected "
                     f"{float(d['gold_rejected_mean']):.4g} over {d['gold_pairs_scored']} pairs")  # floats as text
        out.append(line + ".")
    return out


def block_markdown(block: Block, r: dict, opts: Options, root: Path, level: int = 2) -> list[str]:
    h = "#" * level
    runs = block.runs
    gs, fr = r["gs"], r["frontier"]
    L = []
    status = runs.status.value_counts().to_dict()
    seeds = sorted(set(runs.seed))
    per_cfg = count_text(gs.table.n_seeds)
    temps = _distinct(block, "temperature")
    judges = [_json_text(j) for j in _distinct(block, "judge_json")]
    spp = _distinct(block, "samples_per_prompt")
    mnt = _distinct(block, "max_new_tokens")
    samplers = _distinct(block, "sampler")
    arts = [json.loads(a) for a in _distinct(block, "artifacts_json")]
    ref_hash = ", ".join(sorted({a.get("reference", "?") for a in arts})) or "–"
    base_hash = ", ".join(sorted({a.get("baseline", "?") for a in arts})) or "–"
    hw = sorted({json.loads(x).get("cpu", "?") for x in _distinct(block, "hardware_json")})
    commits = sorted({c[:10] for c in _distinct(block, "git_commit") if c})
    compute = sorted({_compute_text(json.loads(x)) for x in _distinct(block, "resources_json")}) \
        if "resources_json" in block.runs else []
    L += [f"{h} Protocol", "",
          f"- **Suite**: `{block.suite}` (version {', '.join(map(str, _distinct(block, 'suite_version')))}), "
          f"preset `{block.preset}`.",
          f"- **Judge** (gold reward): {'; '.join(judges) or '–'}"
          + (" ⚠ more than one judge: win rates and rewards are not comparable" if len(judges) > 1 else "") + ".",
          f"- **Reference**: π_SFT (the `reference` algorithm: the suite's SFT policy, unchanged; KL 0 by "
          f"construction; artifact {ref_hash}). Every win rate is against one fixed π_SFT baseline sample per "
          f"prompt (artifact {base_hash}), ties count ½.",
          f"- **Sampling**: temperature {', '.join(map(str, temps)) or '–'}, no top-k/top-p, at most "
          f"{', '.join(map(str, mnt)) or '–'} new tokens, {', '.join(map(str, spp)) or '–'} sample(s) per prompt, "
          f"sampler {', '.join(map(str, samplers)) or '–'}.",
          f"- **Prompts**: {len(block.prompts)} evaluation prompts, the same for every run (comparisons are paired "
          "on them).",
          *_pairs_load_lines(block),
          f"- **Seeds**: {', '.join(map(str, seeds))}; {per_cfg} finished seed(s) per "
          f"configuration. **Runs**: {len(runs)} (" + ", ".join(f"{v} {k}" for k, v in sorted(status.items())) + ").",
          f"- **Failure criteria** (declared before looking): diverged; failed; final KL above **{opts.kl_bound:g} "
          "nats**; final gold reward below that of the π_SFT run with the same seed. Means and CIs are over the "
          "runs that finished (status ok), including those that meet the KL or reward criterion; diverged and "
          "failed runs have no final evaluation and are counted in the failure columns.",
          f"- **Statistics**: {int(round(100 * (1 - opts.alpha)))}% intervals; every bootstrap has "
          f"{opts.n_resamples} resamples and seed {opts.seed} (the report is deterministic). Per configuration: "
          "hierarchical bootstrap, seeds then prompts (one prompt resample shared by the drawn seeds, since all "
          "seeds use the same prompts). Pairs: differences on the same prompts with runs paired by seed, "
          "bootstrap p-values Holm-corrected per metric; probability of improvement, Welch and exact "
          "Mann–Whitney on the per-seed values. Length-controlled win rate: logistic GLM "
          "σ(θ + φ·tanh(Δlen/sd(Δlen))) on the per-sample outcomes, Δlen in tokens, read at Δlen = 0 "
          f"(AlpacaEval's *length_controlled_minimal*), bootstrap CIs by {gs.lc_method} "
          "(refit: every replicate refitted; onestep: one Newton step per replicate, used for large inputs).",
          f"- **Hardware**: {'; '.join(hw) or '–'}. **Compute** (device, precision): {'; '.join(compute) or '–'}. "
          f"**Code**: git {', '.join(commits) or '–'}.", ""]
    L += [f"{h}# Library versions", ""] + _versions_section(block) + [""]
    prov = r["provenance"]
    warn = [k for k in ("judge", "evaluation", "artifacts", "sampler") if prov.get(k)]
    if warn:
        L += [f"> ⚠ Runs differ in {', '.join(warn)}: " + "; ".join(
            f"{k}: {' | '.join(_json_text(json.dumps(v)) if isinstance(v, dict) else str(v) for v in prov[k])}"
            for k in warn) + ". Comparisons across them are not like for like.", ""]
    L += [f"{h} At a glance", ""] + _glance(block, r, opts) + [""]
    L += [f"{h} Summary", ""]
    _table(L, r["tables"]["summary"], r["paths"].get("summary"), root)
    L += [f"{h} Reward–KL frontier", ""]
    _fig(L, r["figs"].get("frontier"), root, "reward-KL frontier",
         "Gold reward (left) and win rate (right) against KL(π‖π_SFT) in nats per sequence, for every checkpoint "
         "(hollow) and final evaluation (filled) of every run; faint lines follow a run through training. Colour: "
         "algorithm; marker: hyperparameters. The thick step line joins each algorithm's Pareto set (no other "
         "evaluation of that algorithm has lower KL and higher reward). Up and to the left is better")
    _fig(L, r["figs"].get("frontier_sqrt_kl"), root, "frontier against sqrt KL",
         "The same against √KL, which spreads out the low-KL region (Gao et al. 2022)")
    if r["tables"].get("frontier") is None:
        L += ["No trained algorithm with evaluations: no frontier statistics.", ""]
    _table(L, r["tables"].get("frontier"), r["paths"].get("frontier"), root)
    if "frontier_points" in r["paths"]:
        p = r["paths"]["frontier_points"][0]
        L += [f"Every plotted point, with its Pareto flags: [{p.name}]({p.relative_to(root).as_posix()}).", ""]
    L += [f"{h} Seed stability", ""]
    _fig(L, r["figs"].get("seed_stability"), root, "seed stability",
         "Every seed of every configuration as a dot (final evaluation), the mean over seeds (bar) and its 95% CI "
         "(line; seeds, then prompts). Runs that diverged or failed are marked with a red cross at the bottom")
    _table(L, r["tables"].get("failures"), r["paths"].get("failures"), root)
    _table(L, r["tables"].get("over_seeds"), r["paths"].get("over_seeds"), root)
    _table(L, r["tables"].get("seeds"), r["paths"].get("seeds"), root)
    if r["swept"]:
        L += [f"{h} Sensitivity to hyperparameters", ""]
        for algo in r["swept"]:
            _fig(L, r["figs"].get(f"sensitivity_{algo}"), root, f"sensitivity of {algo}",
                 f"{algo}: win rate (solid; dashed: length-controlled), gold reward, KL and length against each "
                 "swept hyperparameter, mean over seeds with 95% CI, dots = seeds; dotted horizontal lines: the "
                 "other methods")
        _fig(L, r["figs"].get("expected_max"), root, "expected max",
             "Expected best seed-averaged score when n configurations of the grid are tried at random "
             "(without replacement): how much the result owes to the tuning budget")
        _table(L, r["tables"].get("sensitivity"), r["paths"].get("sensitivity"), root)
    L += [f"{h} Pairwise comparisons", ""]
    pairs = r["pairs"]
    if pairs is not None and not pairs.empty:
        min_p = pairs.mwu_min_p.max()
        if min_p == min_p and min_p >= opts.alpha:
            L += [f"> With these seed counts the exact Mann–Whitney test cannot reach p < {opts.alpha:g} (smallest "
                  f"attainable p = {min_p:.3f}): a non-significant Mann–Whitney result says nothing here. The paired "
                  "bootstrap on prompts and the probability of improvement are the informative columns.", ""]
        if pairs.versions_differ.astype(bool).any():
            n = int(pairs.versions_differ.astype(bool).sum())
            L += [f"> ⚠ {n} comparison(s) involve runs produced by different library versions (column *versions*).",
                  ""]
    if r["tables"].get("pairs") is None:
        L += ["Fewer than two configurations with results: nothing to compare.", ""]
    _table(L, r["tables"].get("pairs"), r["paths"].get("pairs"), root)
    L += [f"{h} Bradley–Terry ratings", ""]
    _fig(L, r["figs"].get("bradley_terry"), root, "Bradley-Terry ratings",
         "Maximum-likelihood Bradley–Terry ratings with 95% CIs (bootstrap over prompts), π_SFT anchored at 1000")
    if r["tables"].get("bradley_terry") is None:
        L += ["Fewer than two configurations with results: no ratings.", ""]
    _table(L, r["tables"].get("bradley_terry"), r["paths"].get("bradley_terry"), root)
    L += [f"{h} Training curves", ""]
    any_curve = False
    for algo in r["trained"]:
        f = r["figs"].get(f"training_curves_{algo}")
        if f:
            any_curve = True
            _fig(L, f, root, f"training curves of {algo}",
                 f"{algo}: the metrics it logged per step (train_log.jsonl) and the evaluations along training, mean "
                 "over seeds with a min–max band across seeds")
    if not any_curve:
        L += ["No training logs.", ""]
    return L


def render(blocks: list[Block], results: list[dict], opts: Options, root: Path, results_root: Path) -> str:
    L = ["# prefbench report", ""]
    n_runs = sum(len(b.runs) for b in blocks)
    L += [f"Built by `prefbench report` from {n_runs} runs in `{results_root}` (JSON and Parquet files only). "
          "Tables are in `tables/` as Markdown, LaTeX (booktabs) and CSV (full precision); figures in `figures/` "
          "as PNG and PDF.", ""]
    if len(blocks) > 1:
        from harness.analysis import block_title
        from harness.analysis.collect import identity_differences

        differs = identity_differences(blocks)
        L += ["Blocks are analysed separately: a block is one comparable configuration (suite and version, "
              "preset, π_SFT, pairs and baseline artifacts, sampler, judge), and runs of different blocks never "
              "share a row, a paired test or a frontier.", ""]
        for b, r in zip(blocks, results):
            L += [f"## {b.suite} / {b.preset}" + (f" [{b.tag}]" if b.tag else ""), "",
                  f"*{block_title(b, differs.get(b.key))}*", ""] + block_markdown(b, r, opts, root, level=3)
    else:
        L += [f"Suite `{blocks[0].suite}`, preset `{blocks[0].preset}`.", ""]
        L += block_markdown(blocks[0], results[0], opts, root, level=2)
    return "\n".join(L).rstrip() + "\n"


def _compute_text(res: dict) -> str:
    """A run's resources as the protocol shows them: "cuda:0 (NVIDIA H100), bf16" or "cpu, fp32"."""
    if not res:
        return "not recorded"
    dev = str(res.get("device", "?"))
    if res.get("gpu_name"):
        dev += f" ({res['gpu_name']})"
    extra = f", micro-batch {res['micro_batch_size']}" if res.get("micro_batch_size") else ""
    return f"{dev}, {res.get('precision', '?')}{extra}"
