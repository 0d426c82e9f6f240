"""The registry lists algorithms without heavy imports; configs are typed and validated."""
import subprocess
import sys
from pathlib import Path

import pytest

from harness import registry
from harness.core.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


def test_listing_algorithms_imports_no_heavy_backend():
    code = ("import sys; from harness.cli import main; main(['list', 'algorithms']); "
            "heavy = [m for m in ('torch', 'transformers', 'trl', 'vllm') if m in sys.modules]; "
            "print('HEAVY', heavy, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0
    assert "HEAVY []" in r.stderr, r.stderr
    for name in ("dpo", "sft", "reference"):
        assert f"\n{name}: " in "\n" + r.stdout
    assert "beta = 0.1" in r.stdout


def test_configs_have_defaults_and_validate():
    dpo = registry.get("dpo")
    cfg = dpo.make_config({}, "test")
    assert cfg.beta > 0 and cfg.loss == "sigmoid"
    assert dpo.cls(dpo.make_config({"label_smoothing": 0.1}, "t")).variant() == "cdpo"
    assert dpo.cls(dpo.make_config({"loss": "ipo"}, "t")).variant() == "ipo"
    with pytest.raises(UserError, match="beta: got 0.0, must be > 0"):
        dpo.make_config({"beta": 0.0}, "t")
    with pytest.raises(UserError, match="unknown algorithm.*did you mean 'dpo'"):
        registry.get("dpoo")


def test_every_algorithm_documents_every_hyperparameter():
    from harness.core.config import describe

    for spec in registry.all_specs():
        assert spec.description
        for f in describe(spec.config_cls):
            assert f["help"], (spec.name, f["name"])
