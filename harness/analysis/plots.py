"""Figures (matplotlib, Agg backend), each saved as PNG and PDF: the reward–KL frontier, seed
stability, sensitivity to hyperparameters, expected best score against tuning budget, training
curves with across-seed bands, and Bradley–Terry ratings."""
from __future__ import annotations

import inspect
import json
import logging
from contextlib import contextmanager, nullcontext
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.layout_engine import TightLayoutEngine  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from harness.core import stats  # noqa: E402
from harness.analysis.collect import HP_SYMBOLS, REFERENCE, Block, count_text  # noqa: E402
from harness.analysis.options import Options  # noqa: E402
from harness.analysis.tables import KL_MARKS  # noqa: E402

FIXED_COLOURS = {REFERENCE: "#444444", "sft": "#e6862a", "dpo": "#1f77b4"}
# distinct colours for the other algorithms, in order of appearance (a sweep of 12 algorithms once drew two
# in the same green); a 20th algorithm and later reuse them
PALETTE = ["#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#000075",
           "#9a6324", "#f032e6", "#469990", "#800000", "#808000", "#42d4f4", "#aaffc3"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "h", "<", ">", "p", "d"]  # "*" is π_SFT's
KL_LABEL = "KL(π‖π_SFT)  [nats per sequence]"
SQRT_KL_LABEL = "√KL(π‖π_SFT)  [√nats per sequence]"
METRIC_LABELS = {"gold_reward": "gold reward", "win_rate": "win rate vs π_SFT sample",
                 "lc_win_rate": "length-controlled win rate", "kl": KL_LABEL, "length": "length  [tokens]"}

plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "font.size": 9, "axes.titlesize": 10,
                     "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 8, "pdf.fonttype": 42})


class Style:
    """Colour per algorithm, marker per configuration within its algorithm."""

    def __init__(self, block: Block):
        algos = list(dict.fromkeys(block.groups.algorithm))
        spare = iter(PALETTE * 4)
        self.colour = {a: FIXED_COLOURS.get(a) or next(spare) for a in algos}
        self.marker = {}
        for a in algos:
            for k, g in enumerate(block.groups.index[block.groups.algorithm == a]):
                self.marker[int(g)] = "*" if a == REFERENCE else MARKERS[k % len(MARKERS)]
        self.groups = block.groups
        self._algorithm = block.groups.algorithm.to_dict()  # plain lookups: plots ask per point

    def of(self, g: int) -> tuple[str, str]:
        return self.colour[self._algorithm[g]], self.marker[int(g)]

    def handle(self, g: int, **kw) -> Line2D:
        c, m = self.of(g)
        return Line2D([], [], color=c, marker=m, linestyle="none", markersize=7 if m != "*" else 11,
                      label=self.groups.label[g], **kw)


def _tight(fig, rect=None) -> None:
    """``fig.tight_layout(rect=rect)`` without leaving a layout engine on the figure: the same layout,
    and ``savefig`` then skips its own layout pass before each format.

    With a ``rect``, matplotlib measures every axes' tight box twice (once for the margins, once more
    inside the rect) although nothing moves in between; the second measurement is served from the
    first here (the same boxes, so the same layout), which halves the cost of this pass."""
    from matplotlib import artist

    measure = getattr(artist, "_get_tightbbox_for_layout_only", None)
    if measure is None:  # another matplotlib: its own layout, measured twice
        TightLayoutEngine(rect=rect).execute(fig)
        return
    axes, seen = set(map(id, fig.axes)), {}

    def once(obj, *args, **kwargs):
        if id(obj) not in axes or kwargs:
            return measure(obj, *args, **kwargs)
        key = (id(obj),) + tuple(map(id, args))
        if key not in seen:
            seen[key] = measure(obj, *args)
        return seen[key]

    artist._get_tightbbox_for_layout_only = once
    try:
        TightLayoutEngine(rect=rect).execute(fig)
    finally:
        artist._get_tightbbox_for_layout_only = measure


@contextmanager
def _lean_pdf_fonts():
    """While PDFs are written, subset their fonts without the OpenType layout tables (GSUB, GPOS, GDEF,
    kern): matplotlib places every glyph itself and a PDF viewer draws a Type 42 font by glyph id, so
    those tables are never read, and subsetting them is most of the time fontTools takes per font (about
    0.18 s of 0.25 s per PDF figure). The glyphs, their outlines, widths and the text layer are the same.
    Only with the matplotlib versions whose internal hook this replaces (``get_glyphs_subset(fontfile,
    glyphs)``, 3.11); otherwise nothing changes."""
    try:
        from fontTools import subset
        from matplotlib.backends import _backend_pdf_ps as pdf_ps

        original = pdf_ps.get_glyphs_subset
        usable = list(inspect.signature(original).parameters) == ["fontfile", "glyphs"] and hasattr(
            pdf_ps, "SubsetResults")
    except (ImportError, AttributeError, TypeError, ValueError):
        usable = False
    if not usable:
        yield
        return

    def lean_subset(fontfile, glyphs):
        options = subset.Options(glyph_names=True, recommended_glyphs=True, layout_features=[])
        options.drop_tables += ["GSUB", "GPOS", "GDEF", "kern", "FFTM"]
        options.font_number = getattr(fontfile, "face_index", 0)
        quiet = logging.getLogger("fontTools.subset")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # "table X NOT subset ... dropped" for vendor tables of some fonts
        try:
            font = subset.load_font(fontfile, options)
            subsetter = subset.Subsetter(options=options)
            subsetter.populate(gids=glyphs)
            subsetter.subset(font)
        finally:
            quiet.setLevel(level)
        return pdf_ps.SubsetResults(font, subsetter.glyph_index_map)._as_cm()

    pdf_ps.get_glyphs_subset = lean_subset
    try:
        yield
    finally:
        pdf_ps.get_glyphs_subset = original


def _save(fig, base: Path, opts: Options) -> list[Path]:
    """Every format of ``opts.formats`` with one tight bounding box, measured once by the PNG's renderer
    at the saving resolution (what ``bbox_inches="tight"`` measures for the PNG, so the PNG is the same
    file) and given to each ``savefig``, which then draws each format once instead of laying the figure
    out again first. A PDF's page is that box: within a few points of what its own renderer measures."""
    out = []
    dpi = plt.rcParams["savefig.dpi"]
    shown = fig.dpi
    try:
        if dpi != "figure":
            fig.dpi = dpi
        bbox = fig.get_tightbbox(fig.canvas.get_renderer()).padded(plt.rcParams["savefig.pad_inches"])
    finally:
        fig.dpi = shown
    for fmt in opts.formats:
        p = base.with_suffix(f".{fmt}")
        with _lean_pdf_fonts() if fmt == "pdf" else nullcontext():
            fig.savefig(p, bbox_inches=bbox, metadata={"CreationDate": None} if fmt == "pdf" else None)
        out.append(p)
    plt.close(fig)
    return out


def judge_name(block: Block) -> str:
    try:
        j = json.loads(block.runs.judge_json.iloc[0])
        return " ".join(str(j[k]) for k in ("kind", "version") if j.get(k))
    except (ValueError, KeyError, IndexError):
        return "judge"


def _metric_label(block: Block, m: str) -> str:
    if m == "gold_reward":
        return f"gold reward  [{judge_name(block)}, mean over prompts]"
    if m == "win_rate":
        if "win_baseline" in block.runs and set(block.runs.win_baseline) == {"dataset"}:
            return "win rate vs the dataset's reference response  [ties ½]"
        return "win rate vs π_SFT baseline sample  [ties ½]"
    return METRIC_LABELS.get(m, m)


def shown_groups(block: Block, table: pd.DataFrame, opts: Options) -> tuple[list[int], str]:
    """At most ``opts.max_plot_groups`` configurations: π_SFT and the best by win rate."""
    gids = [int(g) for g in table.index]
    if len(gids) <= opts.max_plot_groups:
        return gids, ""
    ref = block.reference_group
    keep = [ref] if ref is not None else []
    for g in table.sort_values("win_rate", ascending=False).index:
        if len(keep) >= opts.max_plot_groups:
            break
        if int(g) not in keep:
            keep.append(int(g))
    return sorted(keep), f" (showing {len(keep)} of {len(gids)} configurations: π_SFT and the best by win rate)"


# ----------------------------------------------------------------------------- frontier

def plot_frontier(block: Block, fr, opts: Options, base: Path, sqrt: bool = False) -> list[Path]:
    st = Style(block)
    pts = fr.points
    tx = (lambda k: np.sqrt(np.clip(k, 0, None))) if sqrt else (lambda k: k)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    # runs in (run, step) order, cut into one path per run
    order = np.lexsort((pts.step.to_numpy(), pts.run.to_numpy()))
    run_sorted = pts.run.to_numpy()[order]
    cuts = np.flatnonzero(run_sorted[1:] != run_sorted[:-1]) + 1
    starts, ends = np.r_[0, cuts], np.r_[cuts, len(order)]
    group_of = pts.group.to_numpy()
    kl_all = pts.kl.to_numpy(dtype=float)
    style = pd.DataFrame([st.of(int(g)) for g in group_of], columns=["c", "mk"], index=pts.index)
    colour_of = style.c.to_numpy()
    for ax, m in zip(axes, ("gold_reward", "win_rate")):
        # each run's path through its checkpoints to its final evaluation (one LineCollection)
        y_all = pts[m].to_numpy(dtype=float)
        segs, cols = [], []
        for a, b in zip(starts, ends):
            if b - a > 1:
                rows = order[a:b]
                segs.append(np.column_stack([tx(kl_all[rows]), y_all[rows]]))
                cols.append(colour_of[rows[0]])
        if segs:
            ax.add_collection(LineCollection(segs, colors=cols, alpha=0.25, lw=0.8, zorder=1))
        # one scatter per (algorithm, marker): cheap with hundreds of configurations
        for (c, mk), g in pts.groupby([style.c, style.mk]):
            size = 140 if mk == "*" else 45
            ck, fin = g[~g.final], g[g.final]
            ax.scatter(tx(ck.kl), ck[m], s=size * 0.5, marker=mk, facecolor="white", edgecolor=c, lw=1, alpha=0.8,
                       zorder=2)
            ax.scatter(tx(fin.kl), fin[m], s=size, marker=mk, color=c, edgecolor="black", lw=0.4, zorder=3)
        for algo, g in pts[pts.algorithm != REFERENCE].groupby("algorithm"):
            ok = g[m].notna() & g.kl.notna()
            ek, er = stats.frontier_envelope(g.kl[ok], g[m][ok])
            if ek.size:
                c = st.colour[algo]
                ax.step(tx(ek), er, where="post", color=c, lw=2.2, alpha=0.9, zorder=4)
                ax.scatter(tx(ek), er, s=170, facecolor="none", edgecolor=c, lw=1.6, zorder=5)
        # a KL that is not the exact per-step sum is marked where it is drawn (docs/metrics.md §3.5)
        kinds = pts.run.map(block.runs.kl_kind) if "kl_kind" in block.runs else pts.run.map(lambda _: "exact")
        for _, r in pts[kinds.isin(list(KL_MARKS)) & pts.final].iterrows():
            ax.annotate(KL_MARKS[kinds[r.name]], (float(tx(r.kl)), float(r[m])), xytext=(5, 4),
                        textcoords="offset points", fontsize=11, color="black", zorder=6)
        ax.axhline(fr.floors[m], color="#777777", ls=":", lw=1, zorder=0)
        ax.set_xlabel(SQRT_KL_LABEL if sqrt else KL_LABEL)
        ax.set_ylabel(_metric_label(block, m))
        ax.set_xlim(left=-0.02 * float(tx(pts.kl.max()) or 1))
    present = [int(g) for g in block.groups.index if (pts.group == g).any()]
    if len(present) <= opts.max_plot_groups:
        handles = [st.handle(g) for g in present]
    else:  # too many configurations to list: colours only
        handles = [Line2D([], [], color=c, marker="*" if a == REFERENCE else "o", ls="none",
                          label="reference (π_SFT)" if a == REFERENCE else a) for a, c in st.colour.items()]
        handles.append(Line2D([], [], color="none", label=f"(markers: {len(present)} configurations)"))
    handles += [Line2D([], [], color="#555555", marker="o", mfc="white", ls="none", label="checkpoint"),
                Line2D([], [], color="#555555", marker="o", mec="black", ls="none", label="final evaluation"),
                Line2D([], [], color="#555555", lw=2.2, marker="o", mfc="none", ms=11,
                       label="Pareto set of the algorithm"),
                Line2D([], [], color="#777777", ls=":", label="π_SFT level")]
    present_kinds = set(block.runs.kl_kind) if "kl_kind" in block.runs else set()
    for kind, label in (("estimate", "KL is an estimate"), ("bound", "KL is an upper bound (best-of-n, ties)")):
        if kind in present_kinds:
            handles.append(Line2D([], [], color="none", label=f"{KL_MARKS[kind]}  {label}"))
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(0.905, 0.5), frameon=False)
    fig.subplots_adjust(right=0.9, wspace=0.22)
    n_runs = pts.run.nunique()
    fig.suptitle(f"Reward–{'√KL' if sqrt else 'KL'} frontier, {block.suite} ({block.preset}): {n_runs} runs, every "
                 f"checkpoint and final "
                 f"evaluation\nthick line = each algorithm's Pareto set (no point of the algorithm has lower KL and "
                 f"higher reward), chosen on the same prompts it is drawn on", fontsize=10)
    return _save(fig, base, opts)


# ----------------------------------------------------------------------------- seeds

def plot_seed_stability(block: Block, gs, fr, opts: Options, base: Path) -> list[Path]:
    st = Style(block)
    t = gs.table
    gids, note = shown_groups(block, t, opts)
    seeds = gs.seeds
    metrics = ("gold_reward", "win_rate", "kl", "length")
    fig, axes = plt.subplots(2, 2, figsize=(max(10, 1.1 * len(gids) + 4), 8.5), sharex=True)
    x = np.arange(len(gids))
    # each shown configuration's seeds, once (not a frame filter per configuration and metric)
    by_group = {int(g): s for g, s in seeds[seeds.group.isin(gids)].groupby("group", sort=False)}
    empty = seeds.iloc[0:0]
    for ax, m in zip(axes.ravel(), metrics):
        mean = t[m].to_dict()
        ci_lo = t[f"{m}_ci_low"].to_dict() if f"{m}_ci_low" in t else {}
        ci_hi = t[f"{m}_ci_high"].to_dict() if f"{m}_ci_high" in t else {}
        for k, g in enumerate(gids):
            c, mk = st.of(g)
            s = by_group.get(int(g), empty)
            ok = s[s.status == "ok"]
            off = np.linspace(-0.18, 0.18, len(ok)) if len(ok) > 1 else np.zeros(len(ok))
            ax.scatter(k + off, ok[m], color=c, marker=mk, s=60 if mk == "*" else 28, edgecolor="black", lw=0.3,
                       zorder=3)
            if not np.isnan(mean[g]):
                ax.plot([k - 0.28, k + 0.28], [mean[g]] * 2, color="black", lw=1.6, zorder=4)
            lo, hi = ci_lo.get(g), ci_hi.get(g)
            if lo == lo and hi == hi and lo is not None:
                ax.plot([k + 0.34] * 2, [lo, hi], color="black", lw=1.2, zorder=4)
            bad = s[s.status != "ok"]
            if len(bad):
                ax.scatter([k], [0.03], transform=ax.get_xaxis_transform(), marker="x", color="#d62728", s=50,
                           zorder=5)
                what = ", ".join(f"{n} {s}" for s, n in bad.status.value_counts().sort_index().items())
                ax.text(k + 0.08, 0.03, what, transform=ax.get_xaxis_transform(), color="#d62728",
                        fontsize=7, va="center")
        if m == "gold_reward":
            ax.axhline(fr.floors["gold_reward"], color="#777777", ls=":", lw=1)
        if m == "win_rate":
            ax.axhline(0.5, color="#777777", ls=":", lw=1)
        if m == "kl":
            ax.axhline(0.0, color="#777777", ls=":", lw=1)
        ax.set_ylabel(_metric_label(block, m))
    for ax in axes[-1]:
        ax.set_xticks(x, [block.groups.label[g] for g in gids], rotation=30, ha="right")
    handles = [Line2D([], [], color="#555555", marker="o", ls="none", label="one seed (final evaluation)"),
               Line2D([], [], color="black", lw=1.6, label="mean over seeds"),
               Line2D([], [], color="black", marker="|", ms=14, mew=1.3, ls="none",
                      label="95% CI (seeds, then prompts)"),
               Line2D([], [], color="#777777", ls=":", label="π_SFT level")]
    if (seeds.group.isin(gids) & (seeds.status != "ok")).any():
        handles.append(Line2D([], [], color="#d62728", marker="x", ls="none", label="diverged / failed runs"))
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), bbox_to_anchor=(0.5, 0.955), frameon=False)
    n_runs = count_text(t.n_runs[gids])
    n_bad = int((seeds.group.isin(gids) & (seeds.status != "ok")).sum())
    fig.suptitle(f"Seed stability, {block.suite} ({block.preset}): every seed is a dot "
                 f"({n_runs} runs per configuration"
                 f"{f', {n_bad} without a final evaluation' if n_bad else ''}){note}", fontsize=10)
    _tight(fig, rect=(0, 0, 1, 0.93))
    return _save(fig, base, opts)


# ----------------------------------------------------------------------------- sensitivity

def _is_numeric(vals) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)


def ramp(n: int) -> list:
    """n distinguishable colours in a sequential order (configurations of one algorithm, by value)."""
    if n <= 1:
        return ["#1f77b4"]
    cmap = matplotlib.colormaps["viridis"]
    return [cmap(x) for x in np.linspace(0.0, 0.85, n)]


MAX_LINES = 6  # sensitivity plots: beyond this many combinations of the other hyperparameters, summarise


def _sensitivity_summarised(axes, ga, hps, key, others, pos, metrics, seeds, colour) -> None:
    """Per value of ``key``: the best configuration over the other hyperparameters (by win rate), with
    its CI and seeds, and the range of the seed-averaged metric over the other hyperparameters."""
    by_value = {}
    for g in ga.index:
        by_value.setdefault(pos(hps[g].get(key)), []).append(g)
    xs = np.array(sorted(by_value))
    best = [ga.loc[by_value[x], "win_rate"].idxmax() for x in xs]
    names = ", ".join(HP_SYMBOLS.get(k, k) for k in others)
    for ax, m in zip(axes, metrics):
        lo_r = [ga.loc[by_value[x], m].min() for x in xs]
        hi_r = [ga.loc[by_value[x], m].max() for x in xs]
        ax.fill_between(xs, lo_r, hi_r, color=colour, alpha=0.15, lw=0, label=f"range over {names}")
        y = ga.loc[best, m].to_numpy(dtype=float)
        lo = ga.loc[best, f"{m}_ci_low"].to_numpy(dtype=float)
        hi = ga.loc[best, f"{m}_ci_high"].to_numpy(dtype=float)
        ax.errorbar(xs, y, yerr=[np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)], color=colour, marker="o",
                    capsize=3, lw=1.6, ms=5, label=f"best over {names} (by win rate): mean, 95% CI", zorder=3)
        s = seeds[seeds.group.isin(best) & (seeds.status == "ok")]
        ax.scatter(s.group.map(dict(zip(best, xs))), s[m], color=colour, s=12, alpha=0.5, zorder=1, lw=0)


def plot_sensitivity(block: Block, gs, fr, algo: str, opts: Options, base: Path) -> list[Path] | None:
    st = Style(block)
    t = gs.table
    ga = t[(t.algorithm == algo) & (t.n_seeds > 0)]
    keys = block.hp_keys.get(algo, [])
    if len(ga) < 2 or not keys:
        return None
    hps = block.groups.hp
    metrics = ("win_rate", "gold_reward", "kl", "length")
    if len(keys) == 1:
        fig, axs = plt.subplots(2, 2, figsize=(11, 8))
        grid = [list(axs.ravel())]
    else:
        fig, axs = plt.subplots(len(keys), 4, figsize=(16, 3.8 * len(keys)), squeeze=False)
        grid = [list(r) for r in axs]
    seeds = gs.seeds
    # the other methods' single configurations (π_SFT, an SFT without a sweep): drawn as levels
    rest = t[(t.algorithm != algo) & (t.n_seeds > 0)]
    singles = rest[rest.algorithm.map(t.algorithm.value_counts()) == 1]
    for row, key in enumerate(keys):
        others = [k for k in keys if k != key]
        vals = [hps[g].get(key) for g in ga.index]
        numeric = _is_numeric(vals)
        cats = sorted(set(map(str, vals))) if not numeric else None

        def pos(v):
            return float(v) if numeric else float(cats.index(str(v)))

        log = bool(numeric and min(vals) > 0 and max(vals) / min(vals) >= 5)
        lines = {}
        for g in ga.index:
            lines.setdefault(tuple(hps[g].get(k) for k in others), []).append(g)
        combos = sorted(lines, key=lambda c: tuple((0, float(v)) if _is_numeric([v]) else (1, str(v)) for v in c))
        if len(combos) > MAX_LINES:
            _sensitivity_summarised(grid[row], ga, hps, key, others, pos, metrics, seeds, st.colour[algo])
            combos = []
        colours = ramp(len(combos)) if len(combos) > 1 else [st.colour[algo]]
        for li, combo in enumerate(combos):
            members = sorted(lines[combo], key=lambda g: pos(hps[g].get(key)))
            xs = np.array([pos(hps[g].get(key)) for g in members])
            colour, mk = colours[li], MARKERS[li % len(MARKERS)]
            lab = ", ".join(f"{HP_SYMBOLS.get(k, k)}={v:g}" if isinstance(v, float) else f"{HP_SYMBOLS.get(k, k)}={v}"
                            for k, v in zip(others, combo)) or f"{algo}: mean, 95% CI"
            for ax, m in zip(grid[row], metrics):
                y = ga.loc[members, m].to_numpy(dtype=float)
                lo = ga.loc[members, f"{m}_ci_low"].to_numpy(dtype=float)
                hi = ga.loc[members, f"{m}_ci_high"].to_numpy(dtype=float)
                ax.errorbar(xs, y, yerr=[np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)], color=colour,
                            marker=mk, capsize=3, lw=1.6, ms=6, label=lab, zorder=3)
                if m == "win_rate":
                    lc = ga.loc[members, "lc_win_rate"].to_numpy(dtype=float)
                    ax.plot(xs, lc, color=colour, marker=mk, mfc="white", ls="--", lw=1, zorder=2,
                            label="length-controlled win rate" if li == 0 else None)
                s = seeds[seeds.group.isin(members) & (seeds.status == "ok")]
                ax.scatter(s.group.map(dict(zip(members, xs))), s[m], color=colour, s=12, alpha=0.5, zorder=1, lw=0)
        for ax, m in zip(grid[row], metrics):
            if log:
                ax.set_xscale("log")
            if numeric:
                ticks = sorted(set(float(v) for v in vals))
                if len(ticks) <= 8:  # label every grid value; denser grids keep matplotlib's ticks
                    ax.set_xticks(ticks, [f"{v:.3g}" for v in ticks])
                    ax.minorticks_off()
                pad = (np.log(max(ticks)) - np.log(min(ticks))) * 0.08 if log else (max(ticks) - min(ticks)) * 0.08
                if log:
                    ax.set_xlim(min(ticks) * np.exp(-pad), max(ticks) * np.exp(pad))
                elif pad > 0:
                    ax.set_xlim(min(ticks) - pad, max(ticks) + pad)
            else:
                ax.set_xticks(range(len(cats)), cats)
            # the other methods' levels (single configurations such as π_SFT and SFT), for context
            for r in singles.itertuples():
                v = getattr(r, m)
                if v == v:
                    ax.axhline(v, color=st.colour[r.algorithm], ls=":", lw=1.3, label=r.label, zorder=0)
            ax.set_xlabel(f"{HP_SYMBOLS.get(key, key)} ({key})" + (", log scale" if log else ""))
            ax.set_ylabel(_metric_label(block, m))
            ax.set_title(_metric_label(block, m).split("  [")[0] if m != "kl" else "KL(π‖π_SFT)")
    handles, labels = [], []
    for ax in grid[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    handles.append(Line2D([], [], color="#555555", marker="o", ls="none", alpha=0.5, ms=4))
    labels.append("one seed")
    first = [k for k, lab in enumerate(labels) if "95% CI" in lab]  # the configurations' own lines first
    order = first + [k for k in range(len(labels)) if k not in first]
    handles, labels = [handles[k] for k in order], [labels[k] for k in order]
    fig.legend(handles, labels, loc="upper center", ncol=min(5, len(labels)), bbox_to_anchor=(0.5, 0.945),
               frameon=False)
    fig.suptitle(f"Sensitivity of {algo} to {', '.join(keys)}, {block.suite} ({block.preset}): mean over seeds with "
                 f"95% CI (seeds, then prompts); dots = seeds; dotted lines = other methods", fontsize=10)
    _tight(fig, rect=(0, 0, 1, 0.9))
    return _save(fig, base, opts)


def plot_expected_max(block: Block, em: pd.DataFrame, opts: Options, base: Path) -> list[Path] | None:
    if em.empty:
        return None
    st = Style(block)
    metrics = [m for m in ("win_rate", "gold_reward") if (em.metric == m).any()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.8), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        for algo, g in em[em.metric == m].groupby("algorithm"):
            g = g.sort_values("budget")
            ax.plot(g.budget, g.expected_max, marker="o", color=st.colour[algo], label=algo)
        short = _metric_label(block, m).split("  [")[0]
        ax.set_xlabel("tuning budget n  [configurations tried at random]")
        ax.set_ylabel(f"expected best {short}")
        ax.set_title(f"{short}: E[best of n configurations]")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend()
    fig.suptitle(f"Expected best seed-averaged score against tuning budget, {block.suite} ({block.preset}); "
                 "unbiased estimator, configurations drawn without replacement", fontsize=10)
    _tight(fig, rect=(0, 0, 1, 0.94))
    return _save(fig, base, opts)


# ----------------------------------------------------------------------------- training curves

def fr_floor(block: Block, gs) -> float:
    ref = block.reference_group
    return float(gs.table.gold_reward[ref]) if ref is not None else float("nan")


def _smooth(y: pd.Series, w: int) -> pd.Series:
    return y.rolling(w, min_periods=1, center=True).mean() if w > 1 else y


def plot_training_curves(block: Block, gs, algo: str, opts: Options, base: Path) -> list[Path] | None:
    st = Style(block)
    t = gs.table
    ga = t[t.algorithm == algo]
    gids, note = shown_groups(block, ga, opts)
    logs = {}
    for g in gids:
        for run in block.groups.runs[g]:
            df = block.train_log(run)
            if not df.empty and "step" in df:
                logs[run] = df
    keys = []
    for df in logs.values():
        for c in df.columns:
            if c not in ("step", "lr", "epoch") and c not in keys and pd.api.types.is_numeric_dtype(df[c]):
                keys.append(c)
    # drop a key that duplicates another (e.g. SFT's nll_per_token == loss)
    for c in list(keys):
        for d in keys:
            if c != d and d in keys[:keys.index(c)] and all(
                    c in df and d in df and np.allclose(df[c], df[d], equal_nan=True) for df in logs.values()):
                keys.remove(c)
                break
    pts = block.points[block.points.group.isin(gids)]
    eval_keys = [m for m in ("gold_reward", "win_rate", "kl") if len(pts)]
    panels = [("train", k) for k in keys] + [("eval", k) for k in eval_keys]
    if not keys:
        return None
    ncol = 3
    nrow = int(np.ceil(len(panels) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(14, 3.5 * nrow), squeeze=False)
    n_steps = max(len(df) for df in logs.values())
    w = max(1, int(round(n_steps / 40)))
    colours = dict(zip(gids, ramp(len(gids)) if len(gids) > 1 else [st.colour[algo]]))
    by_step = {r: df.set_index("step") for r, df in logs.items()}  # once per run, not per run and panel
    runs_of, labels = block.groups.runs.to_dict(), block.groups.label.to_dict()
    pts_of = {int(g): p for g, p in pts.groupby("group", sort=False)}
    for ax, (kind, key) in zip(axes.ravel(), panels):
        for g in gids:
            _, mk = st.of(g)
            c = colours[g]
            lab = labels[g]
            if kind == "train":
                frames = [by_step[r][key] for r in runs_of[g] if r in logs and key in logs[r]]
                if not frames:
                    continue
                wide = pd.concat(frames, axis=1)
                mean = _smooth(wide.mean(axis=1), w)
                ax.plot(mean.index, mean, color=c, lw=1.3, label=lab, marker=mk, ms=5,
                        markevery=max(1, len(mean) // 6))
                if wide.shape[1] > 1:
                    ax.fill_between(wide.index, _smooth(wide.min(axis=1), w), _smooth(wide.max(axis=1), w), color=c,
                                    alpha=0.18, lw=0)
            else:
                p = pts_of.get(int(g))
                if p is None or p.empty:
                    continue
                agg = p.groupby("step")[key].agg(["mean", "min", "max", "count"])
                ax.plot(agg.index, agg["mean"], color=c, marker=mk, lw=1.3, ms=5, label=lab)
                if (agg["count"] > 1).any():
                    ax.fill_between(agg.index, agg["min"], agg["max"], color=c, alpha=0.18, lw=0)
        if kind == "eval":
            level = {"gold_reward": fr_floor(block, gs), "win_rate": 0.5, "kl": 0.0}.get(key)
            if level is not None and level == level:
                ax.axhline(level, color="#777777", ls=":", lw=1, label="π_SFT level")
        ax.set_xlabel("training step")
        title = key if kind == "train" else f"evaluation: {METRIC_LABELS.get(key, key).split('  [')[0]}"
        ax.set_title(title)
        ax.set_ylabel(_metric_label(block, key) if kind == "eval" else key)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    handles, labels = [], []
    for ax in axes.ravel()[:len(panels)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="upper center", ncol=min(6, len(labels)), bbox_to_anchor=(0.5, 0.965),
               frameon=False)
    n_seeds = count_text(t.n_runs[gids])
    smooth = f"training metrics smoothed by a centred moving average over {w} steps" if w > 1 else \
        "training metrics unsmoothed"
    fig.suptitle(f"Training curves of {algo}, {block.suite} ({block.preset}): line = mean over "
                 f"{n_seeds} seeds, band = min–max over seeds; {smooth}{note}", fontsize=10)
    _tight(fig, rect=(0, 0, 1, 0.93 if nrow > 1 else 0.86))
    return _save(fig, base, opts)


# ----------------------------------------------------------------------------- Bradley–Terry

def plot_bradley_terry(block: Block, bt: pd.DataFrame, opts: Options, base: Path) -> list[Path] | None:
    if bt is None or bt.empty:
        return None
    st = Style(block)
    bt = bt.sort_values("elo")
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(bt) + 1.6))
    y = np.arange(len(bt))
    for k, r in enumerate(bt.itertuples()):
        c, mk = st.of(int(r.group))
        ax.errorbar([r.elo], [k], xerr=[[r.elo - r.elo_low], [r.elo_high - r.elo]], color=c, marker=mk, capsize=3,
                    ms=8 if mk != "*" else 12)
    ax.axvline(1000, color="#777777", ls=":", lw=1)
    ax.set_yticks(y, bt.label)
    ax.set_xlabel("Bradley–Terry rating  [Elo scale, anchor = 1000; 400 points = 10:1 odds]")
    ax.set_title(f"Bradley–Terry ratings from gold-reward comparisons on shared prompts, {block.suite} "
                 f"({block.preset}); 95% CI over prompts", fontsize=9)
    _tight(fig)
    return _save(fig, base, opts)


# ----------------------------------------------------------------------------- implicit-reward diagnostics

GRADWEIGHT_KEYS = ("gradweight/p10", "gradweight/p50", "gradweight/p90", "gradweight/mean", "gradweight/ess")
HELDOUT_KEYS = (("accuracy", "held-out ranking accuracy of the implicit reward"),
                ("spearman_gold_gap", "Spearman ρ(implicit margin, gold reward gap), held-out"))


def _heldout_trajectory(run_path: str) -> pd.DataFrame:
    """``extra.implicit_reward.trajectory`` of a run's metrics.json (empty when it has none)."""
    try:
        m = json.loads((Path(run_path) / "metrics.json").read_text())
    except (OSError, ValueError):
        return pd.DataFrame()
    traj = ((m.get("extra") or {}).get("implicit_reward") or {}).get("trajectory") or []
    return pd.DataFrame(traj)


def plot_gradient_weight(block: Block, gs, algo: str, opts: Options, base: Path) -> list[Path] | None:
    """The DPO paper's lens, per configuration of ``algo`` and per run: the distribution over training of
    the per-example gradient weight w = −∂ℓ/∂r̂_w (DPO: σ(r̂_l − r̂_w)), its effective share of the batch,
    and the held-out ranking accuracy and gold rank correlation of the implicit reward. None when the
    runs logged no gradient weights."""
    ga = gs.table[gs.table.algorithm == algo]
    gids, note = shown_groups(block, ga, opts)
    logs, held = {}, {}
    for g in gids:
        for run in block.groups.runs[g]:
            df = block.train_log(run)
            if not df.empty and "gradweight/p50" in df:
                logs[run] = df.set_index("step")
    if not logs:
        return None
    for g in gids:  # metrics.json only when there is a figure to draw
        for run in block.groups.runs[g]:
            h = _heldout_trajectory(block.runs.path.iloc[run])
            if not h.empty and "accuracy" in h:
                held[run] = h.set_index("step")
    st = Style(block)
    colours = dict(zip(gids, ramp(len(gids)) if len(gids) > 1 else [st.colour[algo]]))
    # configurations whose weights live on different scales (IPO's 1/β² next to DPO's ½) are each shown
    # relative to their median at the first step, so their shapes stay comparable on one axis
    first = [float(df["gradweight/p50"].iloc[0]) for df in logs.values()]
    scales = [abs(v) for v in first if v == v and v != 0]
    relative = bool(scales) and max(scales) > 3 * min(scales)
    if relative:
        logs = {r: df.assign(**{k: df[k] / abs(float(df["gradweight/p50"].iloc[0]) or 1.0)
                                for k in GRADWEIGHT_KEYS[:4] if k in df}) for r, df in logs.items()}
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.9), squeeze=False)
    ax_w, ax_e, ax_a, ax_s = axes[0]
    n_steps = max(len(df) for df in logs.values())
    w = max(1, int(round(n_steps / 40)))
    for g in gids:
        runs = [r for r in block.groups.runs[g] if r in logs]
        if not runs:
            continue
        c, mk = colours[g], st.of(g)[1]
        lab = block.groups.label[g]
        mean = {k: _smooth(pd.concat([logs[r][k] for r in runs], axis=1).mean(axis=1), w) for k in GRADWEIGHT_KEYS
                if all(k in logs[r] for r in runs)}
        if "gradweight/p50" not in mean:
            continue
        x = mean["gradweight/p50"].index
        ax_w.plot(x, mean["gradweight/p50"], color=c, lw=1.5, marker=mk, ms=5, markevery=max(1, len(x) // 6),
                  label=f"{lab}: median")
        if "gradweight/p10" in mean and "gradweight/p90" in mean:
            ax_w.fill_between(x, mean["gradweight/p10"], mean["gradweight/p90"], color=c, alpha=0.18, lw=0)
        if "gradweight/mean" in mean:
            ax_w.plot(x, mean["gradweight/mean"], color=c, lw=1, ls="--")
        for r in runs:  # every run (seed) on its own, faint
            ax_w.plot(logs[r].index, _smooth(logs[r]["gradweight/p50"], w), color=c, lw=0.6, alpha=0.35)
            if "gradweight/ess" in logs[r]:
                ax_e.plot(logs[r].index, _smooth(logs[r]["gradweight/ess"], w), color=c, lw=0.6, alpha=0.35)
        if "gradweight/ess" in mean:
            ax_e.plot(x, mean["gradweight/ess"], color=c, lw=1.5, marker=mk, ms=5, markevery=max(1, len(x) // 6),
                      label=lab)
        for ax, (key, _) in zip((ax_a, ax_s), HELDOUT_KEYS):
            traj = [held[r][key].astype(float) for r in block.groups.runs[g] if r in held and key in held[r]]
            if not traj:
                continue
            wide = pd.concat(traj, axis=1)
            for col in wide.columns:
                ax.plot(wide.index, wide[col], color=c, lw=0.6, alpha=0.35)
            ax.plot(wide.index, wide.mean(axis=1), color=c, lw=1.5, marker=mk, ms=5, label=lab)
    ax_w.set_title("per-pair gradient weight w = −∂ℓ/∂r̂_w")
    ax_w.set_xlabel("training step")
    ax_w.set_ylabel(("w / |median w at step 1|" if relative else "w") + "  [median; band p10–p90; dashed: mean]")
    ax_e.set_title("share of the batch that teaches")
    ax_e.set_xlabel("training step")
    ax_e.set_ylabel("(Σ|w|)² / (B·Σw²)")
    ax_e.set_ylim(0, 1.05)
    for ax, (key, title) in zip((ax_a, ax_s), HELDOUT_KEYS):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("training step (0 = π_ref)")
        empty = not ax.lines
        ax.axhline(0.5 if key == "accuracy" else 0.0, color="#777777", ls=":", lw=1)
        if empty:
            ax.text(0.5, 0.5, "no held-out pairs", ha="center", va="center", transform=ax.transAxes, color="#777777")
    ax_a.set_ylabel("accuracy  [ties ½]")
    ax_s.set_ylabel("Spearman ρ")
    handles, labels = ax_w.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(4, len(labels)), bbox_to_anchor=(0.5, 1.0),
               frameon=False)
    n_seeds = count_text(ga.n_runs[gids]) if len(ga) else "–"
    fig.suptitle(f"Implicit-reward diagnostics of {algo}, {block.suite} ({block.preset}): thick = mean over "
                 f"{n_seeds} seeds, faint = each run{note}", fontsize=10, y=1.08)
    _tight(fig)
    return _save(fig, base, opts)
