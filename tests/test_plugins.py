"""Plugins: an installed package registers algorithms through the ``prefbench.algorithms`` entry points.

The worked example of docs/adding-an-algorithm.md (``examples/prefbench-gpo``) is installed with pip
into a temporary target folder, never into the test environment: every check runs prefbench in a
subprocess whose PYTHONPATH holds that folder, so nothing is left behind.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "prefbench-gpo"
HEAVY_CHECK = ("import sys; from harness.cli import main; code = main(sys.argv[1:]); "
               "heavy = [m for m in ('torch', 'transformers', 'trl', 'vllm') if m in sys.modules]; "
               "print('HEAVY', heavy, file=sys.stderr); sys.exit(code)")


def _prefbench(args, site: Path | None, env_extra=None, timeout=120):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(([str(site)] if site else []) + [str(ROOT)])
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", HEAVY_CHECK, *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=timeout)


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """The example plugin, pip-installed (no dependencies, no build isolation: offline) into a temporary
    target folder from a copy of its sources (pip builds in the source tree)."""
    tmp = tmp_path_factory.mktemp("plugin")
    src, site = tmp / "src", tmp / "site"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps",
                        "--no-build-isolation", "--no-index", "--target", str(site), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert list(site.glob("prefbench_gpo-*.dist-info/entry_points.txt"))
    return site


def _fake_plugin(site: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """A minimal installed distribution: dist-info with METADATA and entry_points.txt, plus modules."""
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[prefbench.algorithms]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    for name, text in modules.items():
        (site / f"{name}.py").write_text(text)


def test_plugin_is_listed_without_heavy_imports(plugin_site):
    r = _prefbench(["list", "algorithms"], plugin_site)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stderr, r.stderr
    lines = r.stdout.splitlines()
    gpo = [ln for ln in lines if ln.startswith("gpo: ")]
    assert gpo and gpo[0].endswith("[plugin prefbench-gpo 0.1.0]"), gpo
    assert "    f = 'exponential'" in r.stdout and "\ndpo: " in "\n" + r.stdout
    assert "warning" not in r.stderr


def test_plugin_absent_without_its_install():
    r = _prefbench(["list", "algorithms"], None)
    assert r.returncode == 0 and "\ngpo: " not in "\n" + r.stdout


def test_broken_plugins_cost_one_line_each_and_nothing_else(tmp_path):
    site = tmp_path / "site"
    _fake_plugin(site, "broken-import", {"broken": "no_such_module_xyz"}, {})
    _fake_plugin(site, "raises-on-import", {"boom": "boom_plugin"}, {"boom_plugin": "raise RuntimeError('kaput')\n"})
    _fake_plugin(site, "wrong-name", {"named": "named_plugin"}, {"named_plugin": "X = 1\n"})
    _fake_plugin(site, "clash", {"dpo": "clash_plugin"}, {"clash_plugin": "X = 1\n"})
    r = _prefbench(["list", "algorithms"], site)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("prefbench: warning:")]
    assert len(warnings) == 4, r.stderr
    text = "\n".join(warnings)
    assert "plugin 'broken' (broken-import 1.0, entry point no_such_module_xyz) not loaded: ModuleNotFoundError" in text
    assert "plugin 'boom' (raises-on-import 1.0, entry point boom_plugin) not loaded: RuntimeError: kaput" in text
    assert "registered no algorithm named 'named'" in text
    assert "plugin 'dpo' (clash 1.0" in text and "taken by prefbench's own algorithm" in text
    assert "\ndpo: Direct Preference" in "\n" + r.stdout and "\nsimpo: " in "\n" + r.stdout  # the rest still listed
    assert "HEAVY []" in r.stderr
    # asking for a broken plugin by name: one line naming it, usage exit code, nothing run
    r = _prefbench(["run", "tests/data/tiny.yaml", "--algorithms", "boom", "--results", str(tmp_path / "res")], site)
    assert r.returncode == 2, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("prefbench: error:")]
    assert len(errors) == 1 and "plugin 'boom'" in errors[0] and "RuntimeError: kaput" in errors[0], r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "res").exists()


@pytest.mark.slow
def test_plugin_runs_on_the_tiny_suite(plugin_site, smoke_cache, tmp_path):
    results = tmp_path / "results"
    r = _prefbench(["run", "tests/data/tiny.yaml", "--preset", "smoke", "--algorithms", "gpo", "--seeds", "0",
                    "--set", "gpo.batch_size=2", "--set", "gpo.f=savage", "--results", str(results)], plugin_site,
                   {"PREFBENCH_CACHE": str(smoke_cache), "PREFBENCH_THREADS": "1"}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| gpo" in r.stdout
    (run,) = [p for p in (results / "tiny").iterdir() if p.name.startswith("gpo-")]
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "ok" and m["algorithm"] == "gpo" and m["hyperparameters"]["f"] == "savage"
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == m["extra"]["train_steps"] >= 2
    assert all(k in log[0] for k in ("loss", "rewards/margin", "gradweight/p50", "gradweight/ess"))


def test_one_plugin_module_may_register_several_algorithms(tmp_path):
    code = ("from dataclasses import dataclass\n"
            "from harness.registry import register\n"
            "from harness.training.hparams import OptimConfig\n"
            "from harness.training.pairwise import PairwiseAlgorithm\n\n"
            "@dataclass\nclass C(OptimConfig):\n    pass\n\n"
            "@register('multi-a', 'first', C)\nclass A(PairwiseAlgorithm):\n    pass\n\n"
            "@register('multi-b', 'second', C)\nclass B(PairwiseAlgorithm):\n    pass\n")
    site = tmp_path / "site"
    _fake_plugin(site, "multi", {"multi-a": "multi_plugin", "multi-b": "multi_plugin"}, {"multi_plugin": code})
    r = _prefbench(["list", "algorithms"], site)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    assert "\nmulti-a: first [plugin multi 1.0]" in "\n" + r.stdout
    assert "\nmulti-b: second [plugin multi 1.0]" in "\n" + r.stdout
