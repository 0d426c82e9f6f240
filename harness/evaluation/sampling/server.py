"""One sampling engine for a whole sweep: a process that owns a :class:`VLLMSampler` and samples for
every run of a ``prefbench run``.

Runs are computed in worker processes of their own, one per run (:mod:`harness.execution.runner`),
so a sampler created in a worker dies with it: every evaluated model used to start its own vLLM
engine (10-30 s on CPU, more with a real model on a GPU). The scheduling process therefore starts
this server once, the first time it sends a job that samples with vLLM, and every worker samples
through it (:class:`RemoteSampler`, the same sampler interface). The engine inside starts once and
then takes each policy by loading its weights in place, or, for a LoRA policy, by serving its
adapter on the base model (:mod:`harness.evaluation.sampling.vllm`). Samples are the same as from
a fresh engine for the same seed: they depend only on the weights and the per-prompt seeds.

What crosses the socket is small: token ids, sampling settings and folder names. A worker's
in-memory model is saved to a temporary folder first (safetensors), which the worker removes once
the server has answered. The server decodes nothing: the worker cuts and decodes the raw
continuations with its own tokenizer (:func:`~harness.evaluation.sampling.base.finish_completions`),
exactly as the in-process sampler does.

Lifetime: the server listens on a Unix socket in a private temporary folder (mode 0700) and accepts
only clients that know its random key. It ends when the scheduling process closes it, and with the
scheduling process if that dies (``PR_SET_PDEATHSIG``). It runs in a session of its own, so a
Ctrl-C reaches the scheduling process, which stops the running worker; a worker killed mid-request
only costs the server that request. Its logs (vLLM's) go to stderr.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from harness.evaluation.sampling.base import Completions, GenerationSettings, PolicyHandle, finish_completions

_FAMILY = "AF_UNIX"


class SamplingServer:
    """The scheduling process's handle on the server: :meth:`endpoint` starts it on first use."""

    def __init__(self, sampler: str = "vllm", lora: str = "auto"):
        self.sampler, self.lora = sampler, lora  # lora: VLLMSampler's (adapters or merged weights)
        self._proc: subprocess.Popen | None = None
        self._dir: str | None = None
        self._key = b""

    def endpoint(self) -> dict:
        """Where workers reach the server (passed to :func:`connect` inside the job)."""
        if self._proc is None:
            self._start()
        return self._endpoint()

    def _endpoint(self) -> dict:
        return {"address": str(Path(self._dir) / "socket"), "key": self._key.hex(), "sampler": self.sampler}

    def _start(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="prefbench-sampling-")  # mode 0700: the socket is ours alone
        self._key = os.urandom(16)
        ready_r, ready_w = os.pipe()
        root = str(Path(__file__).resolve().parents[3])
        boot = (f"import sys; sys.path.insert(0, {root!r}); from harness.evaluation.sampling.server import serve; "
                f"serve({str(Path(self._dir) / 'socket')!r}, {self.sampler!r}, {ready_w}, {os.getpid()}, {self.lora!r})")
        env = dict(os.environ, PREFBENCH_SAMPLING_KEY=self._key.hex())
        try:
            self._proc = subprocess.Popen([sys.executable, "-c", boot], pass_fds=(ready_w,), env=env,
                                          stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno(),
                                          start_new_session=True)
        finally:
            os.close(ready_w)
        with os.fdopen(ready_r, "rb") as ready:  # the socket exists once this byte arrives (imports come after)
            if ready.read(1) != b"1":
                code = self._proc.wait()
                self._proc = None
                raise RuntimeError(f"the sampling server did not start (exit status {code}; output above)")

    def close(self, kill: bool = False) -> None:
        """End the server (asked politely unless ``kill``) and remove its folder."""
        proc = self._proc
        if proc is not None:
            if not kill and proc.poll() is None:
                try:
                    with connect(self._endpoint()) as client:
                        client.shutdown()
                    proc.wait(timeout=60)
                except Exception:  # noqa: BLE001 -- ending it is all that matters now
                    pass
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self._proc = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def connect(endpoint: dict) -> RemoteSampler:
    return RemoteSampler(endpoint)


class RemoteSampler:
    """The sampler interface, served by a :class:`SamplingServer` (in a run's worker process)."""

    def __init__(self, endpoint: dict):
        self.name = endpoint["sampler"]
        self._endpoint = endpoint
        self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, *message):
        if self._conn is None:
            from multiprocessing.connection import Client

            self._conn = Client(self._endpoint["address"], family=_FAMILY,
                                authkey=bytes.fromhex(self._endpoint["key"]))
        self._conn.send(message)
        try:
            reply = self._conn.recv()
        except EOFError:
            raise RuntimeError("the sampling server ended while sampling (its output is above)") from None
        if reply[0] == "error":
            raise RuntimeError(f"the sampling server failed: {reply[1]}\n{reply[2]}")
        return reply[1]

    def sample(self, policy: PolicyHandle, prompt_ids: Sequence[Sequence[int]], n: int,
               settings: GenerationSettings, seed: int, desc: str = "sampling") -> Completions:  # noqa: ARG002
        from harness.suites.prompting import stop_token_ids

        eos = stop_token_ids(policy.tokenizer)
        path, adapter, written = policy.path, policy.adapter_path, None
        if path is None:  # an in-memory model: saved for the server, removed once it has answered
            from harness.evaluation.sampling.vllm import write_model_folder

            written = path = write_model_folder(policy)
        try:
            raw, info = self._call("generate", str(path), str(adapter) if adapter is not None else None,
                                   [[int(t) for t in p] for p in prompt_ids], n, asdict(settings), seed, list(eos))
        finally:
            if written is not None:
                shutil.rmtree(written, ignore_errors=True)
        comp = finish_completions(raw, eos, settings.max_new_tokens, policy.tokenizer, n, engine=self.name)
        comp.info.update(info)
        return comp

    def shutdown(self) -> None:
        """Ask the server to end (the scheduling process, when the sweep is over)."""
        self._call("shutdown")

    def close(self) -> None:
        """Disconnect; the server and its engine stay up for the next run."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


# --------------------------------------------------------------------------------------- the server
def serve(address: str, sampler_name: str, ready_fd: int, parent: int, lora: str = "auto") -> None:
    """The server process: listen, say ready, then answer one client at a time until told to end."""
    from multiprocessing.connection import Listener

    from harness.core import env

    env.die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # stop requests are the scheduling process's to handle
    key = bytes.fromhex(os.environ.pop("PREFBENCH_SAMPLING_KEY"))
    listener = Listener(address, family=_FAMILY, authkey=key)
    os.write(ready_fd, b"1")
    os.close(ready_fd)
    env.apply_threads()
    env.quiet_libraries()
    from harness.evaluation.sampling import get_sampler

    sampler = get_sampler(sampler_name)
    if hasattr(sampler, "lora"):
        sampler.lora = lora
    try:
        while True:
            try:
                conn = listener.accept()
            except Exception:  # noqa: BLE001 -- a client with the wrong key, or one that went away
                continue
            with conn:
                if not _serve_client(conn, sampler):
                    return
    finally:
        getattr(sampler, "close", lambda: None)()
        listener.close()


def _serve_client(conn, sampler) -> bool:
    """Answer ``conn``'s requests until it disconnects (True) or asks the server to end (False)."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return True
        if message[0] == "shutdown":
            try:
                conn.send(("ok", None))
            except OSError:
                pass
            return False
        try:
            _, path, adapter, prompts, n, settings, seed, eos = message
            handle = PolicyHandle(None, path=Path(path), adapter_path=Path(adapter) if adapter else None)
            starts = sampler.engine_starts
            reply = ("ok", sampler.generate(handle, prompts, n, GenerationSettings(**settings), seed, eos))
            if sampler.engine_starts != starts:
                from harness.core.progress import say

                say(f"vLLM engine started in {sampler.last_start_s:.0f} s; it samples for every run of this sweep")
        except Exception as e:  # noqa: BLE001 -- the run that asked records it; the server goes on
            reply = ("error", f"{type(e).__name__}: {e}", traceback.format_exc())
        try:
            conn.send(reply)
        except OSError:  # the worker was killed while we sampled: nobody to answer
            return True

