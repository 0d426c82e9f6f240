"""Every patch of TRL/vLLM internals is pinned to the versions it was written for (harness.adapters.PATCHES).

For each patch: the installed versions pass; another version makes applying it stop with one line
naming the patch, before it touches anything; and, where that is cheap, the patch does what it says.
No training, no engine, no torch import: the effects of the vocabulary and position patches on a
model are tested in test_rlhf.py.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.adapters import PATCHES, PatchVersionError, require_patch

HAS_VLLM = importlib.util.find_spec("vllm") is not None  # without importing it (seconds)
VLLM_ENV = ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_NUM_OF_RESERVED_CPU", "VLLM_ENABLE_V1_MULTIPROCESSING",
            "VLLM_CPU_OMP_THREADS_BIND", "PREFBENCH_VLLM_MULTIPROC")


def _needs_vllm(name: str):
    if name.startswith("vllm-") and not HAS_VLLM:
        pytest.skip("vLLM is not installed")


@pytest.fixture
def sandbox(monkeypatch):
    """What the patches change (environment variables, TRL's vLLM check) is restored after the test."""
    for key in (*VLLM_ENV, "TRL_EXPERIMENTAL_SILENCE"):
        monkeypatch.delenv(key, raising=False)
    import trl.import_utils as iu

    monkeypatch.setattr(iu, "is_vllm_available", iu.is_vllm_available)  # restored after the test


def _apply(name: str, tmp_path: Path) -> None:
    """Apply the patch ``name`` the way the harness does, up to its version check: called with a
    mismatched version only (no model, trainer or engine is built)."""
    from harness import adapters
    from harness.adapters import trl_ppo
    from harness.evaluation.sampling import vllm

    if name == "trl-hide-vllm":
        adapters.hide_vllm_from_trl()
    elif name == "trl-experimental-silence":
        adapters.quiet_trl()
    elif name == "trl-ppo-get-reward":
        with trl_ppo._reward_dispatch(SimpleNamespace(get_reward=None)):
            pass
    elif name == "trl-ppo-distributed-loading":
        trl_ppo._skip_distributed_loading(SimpleNamespace())
    elif name == "trl-pad-token":
        adapters.extend_vocab(None, None)  # raises on a version mismatch before touching the model
    elif name == "trl-position-ids":
        adapters.positions_from_attention_mask(None)
    elif name == "vllm-in-process-engine":
        vllm.configure_environment()
    elif name == "vllm-lora-lookup":
        vllm._supports_lora(tmp_path)
    elif name == "vllm-weight-reload":
        vllm.VLLMSampler()._reload(tmp_path)  # checks before it touches the (absent) engine
    else:
        raise AssertionError(f"no test applies patch {name!r}: add it to _apply")


def test_every_patch_names_its_versions_and_its_code():
    from packaging.requirements import Requirement

    for name, patch in PATCHES.items():
        assert patch.requires and patch.applied_by and patch.what, name
        assert all(Requirement(r).specifier for r in patch.requires), name


@pytest.mark.parametrize("name", sorted(PATCHES))
def test_the_installed_versions_pass(name):
    _needs_vllm(name)
    require_patch(name)


@pytest.mark.parametrize("name,pin", [(n, r) for n, p in sorted(PATCHES.items()) for r in p.requires])
def test_another_version_stops_the_patch_with_one_line(name, pin, monkeypatch, sandbox, tmp_path):
    """``_apply`` knows every registered patch, so this also proves each one is checked where applied."""
    import trl.import_utils as iu

    from harness import adapters

    package = pin.split("==")[0]
    real, original = adapters.installed_version, iu.is_vllm_available
    monkeypatch.setattr(adapters, "installed_version", lambda p: "99.0.0" if p == package else real(p) or "0")
    with pytest.raises(PatchVersionError) as err:
        _apply(name, tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and msg == err.value.one_line()
    assert msg.startswith(f"patch {name!r}: written for {pin}, installed {package} 99.0.0; ")
    assert PATCHES[name].applied_by in msg and "harness.adapters.PATCHES" in msg
    # stopped before changing anything
    assert not any(k in os.environ for k in (*VLLM_ENV, "TRL_EXPERIMENTAL_SILENCE"))
    assert iu.is_vllm_available is original


def test_a_missing_library_is_named_and_a_local_build_passes(monkeypatch):
    from harness import adapters

    pin = PATCHES["vllm-lora-lookup"].requires[0]
    monkeypatch.setattr(adapters, "installed_version", lambda p: None)
    with pytest.raises(PatchVersionError) as err:
        require_patch("vllm-lora-lookup")
    assert str(err.value).startswith(f"patch 'vllm-lora-lookup': written for {pin}, installed vllm (none); ")
    local = pin.split("==")[1] + "+cu129"  # a CUDA wheel's version: the same release
    monkeypatch.setattr(adapters, "installed_version", lambda p: local)
    require_patch("vllm-lora-lookup")


def test_vllm_is_found_under_either_distribution_name():
    if not HAS_VLLM:
        pytest.skip("vLLM is not installed")
    from importlib import metadata

    from harness.adapters import installed_version

    found = []
    for dist in ("vllm", "vllm-cpu"):
        try:
            found.append(metadata.version(dist))
        except metadata.PackageNotFoundError:
            pass
    assert found and installed_version("vllm") == found[0]


# ------------------------------------------------------------------------ the patches take effect
def test_hide_vllm_from_trl_makes_trl_see_no_vllm(sandbox):
    import trl.import_utils as iu

    from harness.adapters import hide_vllm_from_trl

    original = iu.is_vllm_available
    hide_vllm_from_trl()
    assert iu.is_vllm_available() is False and iu.is_vllm_available(min_version="0.22.0") is False
    assert iu.is_vllm_available is not original  # the sandbox fixture puts it back


def test_quiet_trl_sets_the_variable_trl_experimental_reads(sandbox):
    from harness.adapters import quiet_trl

    quiet_trl()
    assert os.environ["TRL_EXPERIMENTAL_SILENCE"] == "1"
    source = Path(importlib.util.find_spec("trl.experimental").origin).read_text()  # not imported: no warning
    assert "TRL_EXPERIMENTAL_SILENCE" in source


def test_ppo_reward_dispatch_routes_function_rewards_and_restores():
    from harness.adapters.trl_ppo import _reward_dispatch

    calls = []

    def trl_get_reward(model, query_responses, pad_token_id, context_length):
        calls.append(model)
        return "trl", "trl", "trl"

    module = SimpleNamespace(get_reward=trl_get_reward)
    fn_reward = SimpleNamespace(prefbench_function_reward=True, rewards=lambda q, n: ("scores", q, n))
    value_model = SimpleNamespace()
    with _reward_dispatch(module):
        assert module.get_reward is not trl_get_reward
        assert module.get_reward(fn_reward, "qr", 0, 3) == (None, ("scores", "qr", 3), None)
        assert module.get_reward(value_model, "qr", 0, 3) == ("trl", "trl", "trl") and calls == [value_model]
    assert module.get_reward is trl_get_reward


def test_ppo_trainer_gets_the_distributed_loading_flag():
    from harness.adapters.trl_ppo import _skip_distributed_loading

    trainer = SimpleNamespace()
    _skip_distributed_loading(trainer)
    assert trainer.is_distributed_loading_by_transformers is False


def test_vllm_environment_defaults_and_user_values_win(sandbox, monkeypatch):
    if not HAS_VLLM:
        pytest.skip("vLLM is not installed")
    from harness.evaluation.sampling import vllm

    vllm.configure_environment()
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and vllm._in_process()
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "1" and os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    for key in VLLM_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PREFBENCH_VLLM_MULTIPROC", "1")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")
    vllm.configure_environment()
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "4" and not vllm._in_process()


def test_a_planned_run_checks_its_patches_before_any_compute(tmp_path, monkeypatch, capsys):
    """A TRL-backed algorithm meeting another TRL version stops at planning: one line, exit 2, nothing
    written; an algorithm that patches nothing still plans."""
    from pathlib import Path

    import harness.adapters as adapters
    from harness.cli import main

    tiny = str(Path(__file__).resolve().parent / "data" / "tiny.yaml")
    real = adapters.installed_version
    monkeypatch.setattr(adapters, "installed_version", lambda p: "9.9.9" if p == "trl" else real(p))
    results = tmp_path / "results"
    assert main(["run", tiny, "--algorithms", "ppo-gt", "--results", str(results)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "patch 'trl-" in err[0] and "installed trl 9.9.9" in err[0]
    assert not results.exists()
