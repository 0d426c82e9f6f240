"""The Ray executor: a sweep's runs as Ray tasks on a cluster (``prefbench run --executor ray``).

Everything Ray-specific lives here; ``ray`` is imported only when this executor is chosen.

The guarantees are the local executor's (:mod:`harness.execution.runner`), kept the same way:

- *one fresh process per run.* A Ray task does not compute in its own (reused) worker process: it
  hands the job to a :class:`~harness.execution.runner.Workers` zygote kept by that Ray worker, which
  forks a fresh worker for it with the same preamble (threads, environment, seeded global RNGs) as
  the local executor. A run's files are therefore byte-identical whichever executor computed it, given
  the same thread count (``PREFBENCH_THREADS``; unset, the Ray executor uses ``--cpus-per-run``).
- *one committer.* This process (the driver) claims each run (the results store's flock) before its
  task is submitted, holds the claim while the task runs, and commits the run's staging folder after
  the task returned a clean result, through :func:`~harness.execution.runner.finish_run`. A task that
  raises, or whose Ray worker is killed (SIGKILL, OOM, a lost node), commits nothing: its run counts as
  failed, the other runs go on, and the same command run again computes only what is missing. Ray's
  own task retries are off (``max_retries=0``) so a run is never computed twice behind the driver's back.
- *suite artifacts once.* One task builds the artifacts the runs need (under the artifact cache's
  locks) before any run is submitted, as the local executor does before its first computed run.

The results folder and the artifact cache must be on storage every node sees at the same path.
"""
from __future__ import annotations

import contextlib
import os
import socket

from harness.core import seeds
from harness.core.errors import UserError
from harness.core.progress import say

# process settings the driver hands to every task (the rest of a Ray worker's environment is Ray's)
ENV_PREFIXES = ("PREFBENCH_", "OMP_", "MKL_", "KMP_", "OPENBLAS_", "TOKENIZERS_", "PYTHONHASHSEED", "HF_",
                "TRANSFORMERS_", "WANDB_", "MLFLOW_")  # trackers (--report-to) read their settings there
MAX_IN_FLIGHT = 256  # runs claimed and submitted at once (each holds a lock file open)


def check_flags(executor: str, address: str | None, cpus_per_run: float | None, gpus_per_run: float | None) -> None:
    """The executor flags, as one-line errors before any compute (``prefbench run`` preflight)."""
    import math

    if executor not in ("local", "ray"):
        raise UserError("--executor", executor, "expected local or ray")
    for flag, value, low in (("--cpus-per-run", cpus_per_run, 0.0), ("--gpus-per-run", gpus_per_run, 0.0)):
        if value is None:
            continue
        if executor != "ray":
            raise UserError(flag, str(value), "applies to --executor ray only")
        if not math.isfinite(value) or value < low or value > 1024 or (flag == "--cpus-per-run" and value == 0):
            raise UserError(flag, str(value), "must be a number in " + ("(0, 1024]" if flag == "--cpus-per-run"
                                                                        else "[0, 1024]"))
    if address is not None:
        if executor != "ray":
            raise UserError("--ray-address", address, "applies to --executor ray only")
        if not address.strip():
            raise UserError("--ray-address", address, "empty address (use auto, HOST:PORT or ray://HOST:PORT)")
    if executor == "ray":
        try:
            import importlib.util

            found = importlib.util.find_spec("ray") is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise UserError("--executor", "ray", "the ray package is not installed (pip install ray==2.60.0)")


class RayExecutor:
    """Connects to (or starts) a Ray cluster, then executes a plan on it. ``connect`` is preflight:
    an unreachable cluster, or one without a node big enough for one run, is a one-line error before
    anything is written."""

    def __init__(self, address: str | None = None, cpus_per_run: float | None = None,
                 gpus_per_run: float | None = None):
        self.address = address
        self.cpus = float(cpus_per_run) if cpus_per_run is not None else 1.0
        self.gpus = float(gpus_per_run) if gpus_per_run is not None else 0.0
        self._started = False  # this process started the cluster (ray.init without an address)

    # ------------------------------------------------------------------ connection
    def connect(self) -> None:
        import ray

        os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # each run's lines, not "repeated 2x across cluster"
        kwargs = dict(include_dashboard=False, logging_level="WARNING", log_to_driver=True)
        try:
            if self.address is not None:
                ray.init(address=self.address, **kwargs)
            elif os.environ.get("RAY_ADDRESS"):
                ray.init(**kwargs)
            else:
                ray.init(**kwargs)
                self._started = True
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
            where = self.address or os.environ.get("RAY_ADDRESS") or "(local)"
            raise UserError("--ray-address", where, f"cannot connect to a Ray cluster: {str(e).splitlines()[0][:200]}") from None
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        best_cpu = max((r.get("CPU", 0.0) for r in nodes), default=0.0)
        best_gpu = max((r.get("GPU", 0.0) for r in nodes), default=0.0)
        problem = None
        if self.cpus > best_cpu:
            problem = ("--cpus-per-run", self.cpus, f"no node of the cluster has that many CPUs (largest: {best_cpu:g})")
        elif self.gpus > best_gpu:
            problem = ("--gpus-per-run", self.gpus, f"no node of the cluster has that many GPUs (largest: {best_gpu:g})")
        if problem:
            self.close()
            raise UserError(problem[0], f"{problem[1]:g}", problem[2])
        total = ray.cluster_resources()
        self.slots = max(1, int(total.get("CPU", 1) // self.cpus))
        if self.gpus:
            self.slots = max(1, min(self.slots, int(total.get("GPU", 0) // self.gpus)))
        say(f"Ray cluster: {len(nodes)} node(s), {total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs; "
            f"each run asks for {self.cpus:g} CPU(s) and {self.gpus:g} GPU(s): up to {self.slots} at once")

    def close(self) -> None:
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        except Exception:  # noqa: BLE001 -- closing must never hide the sweep's own outcome
            pass

    # ------------------------------------------------------------------ execution
    def task_env(self) -> dict[str, str]:
        """The driver's process settings every task applies before it starts its zygote."""
        env = {k: v for k, v in os.environ.items()
               if k.startswith(ENV_PREFIXES) and k not in ("PREFBENCH_FAULT", "PREFBENCH_MAIN_PID")}
        env.setdefault("PREFBENCH_THREADS", str(max(1, int(self.cpus))))
        env.setdefault("PYTHONHASHSEED", "0")
        return env

    def execute(self, plan: list, art, store, force: bool = False, n_resamples: int = 10000,
                save_every: int = 50) -> dict:
        """Run every planned run that is not already committed, as Ray tasks; counts by outcome (the
        local executor's)."""
        import ray

        from harness.execution.runner import _artifacts_needed, finish_run

        suite = art.suite
        counts = {"ok": 0, "diverged": 0, "failed": 0, "reused": 0, "busy": 0}
        heads = {run.run_id: f"[{k}/{len(plan)}] {run.algorithm} seed {run.seed} ({run.run_id})"
                 for k, run in enumerate(plan, 1)}
        todo = []
        for run in plan:
            if not force and store.is_complete(suite.name, run.run_id):
                counts["reused"] += 1
                say(f"{heads[run.run_id]}: finished earlier, reused")
            else:
                todo.append(run)
        if not todo:
            return counts
        env = self.task_env()
        task = ray.remote(_run_task)
        resources = dict(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0, retry_exceptions=False)
        remote = task.options(name="prefbench-run", **resources)
        from harness.training import device

        common = {"suite": suite, "preset": art.preset_name, "cache_root": str(art.cache.root.parent),
                  "sampler": art.sampler.name, "resources": device.current().as_dict()}  # --device, precision
        # suite artifacts: built once, in one task, before the runs that need them
        kinds = _artifacts_needed(todo)
        say(f"building or finding suite artifacts ({', '.join(kinds)}) in a Ray task")
        prep = task.options(name="prefbench-artifacts", **resources).remote(
            {**common, "kind": "prepare", "artifacts": kinds, "seed": seeds.derive(suite.seed, "process-globals")},
            env, "suite artifacts")
        try:
            reply = ray.get(prep)
            if reply["code"] == 0 and reply["result"]:
                art.built.extend(reply["result"].get("built", []))
        except ray.exceptions.RayError as e:  # the runs that need the artifacts build them and report
            say(f"suite artifacts: the task failed ({_short(e)}); each run tries again")

        inflight: dict = {}  # ObjectRef -> (run, head, staging, resume_dir, claim)
        queue = list(todo)
        window = min(MAX_IN_FLIGHT, 2 * self.slots)
        try:
            while queue or inflight:
                while queue and len(inflight) < window:
                    run = queue.pop(0)
                    head = heads[run.run_id]
                    claim = contextlib.ExitStack()
                    mine = claim.enter_context(store.claim(suite.name, run.run_id))
                    if not mine:
                        claim.close()
                        counts["busy"] += 1
                        say(f"{head}: being run by another prefbench process, skipped")
                        continue
                    if not force and store.is_complete(suite.name, run.run_id):  # finished while we looked
                        claim.close()
                        counts["reused"] += 1
                        say(f"{head}: finished earlier, reused")
                        continue
                    staging = store.staging_dir(suite.name, run.run_id)
                    resume_dir = store.checkpoint_dir(suite.name, run.run_id)
                    job = {**common, "kind": "run", "run": run, "head": head, "staging": str(staging),
                           "resume_dir": str(resume_dir), "n_resamples": n_resamples, "save_every": save_every,
                           "seed": seeds.derive(run.seed, "process-globals")}
                    ref = remote.remote(job, env, head)
                    inflight[ref] = (run, head, staging, resume_dir, claim)
                    say(f"{head}: submitted")
                if not inflight:
                    break
                ready, _ = ray.wait(list(inflight), num_returns=1)
                for ref in ready:
                    run, head, staging, resume_dir, claim = inflight.pop(ref)
                    try:
                        try:
                            reply = ray.get(ref)
                        except ray.exceptions.RayError as e:
                            say(f"{head}: its Ray task failed: {_short(e)}")
                            reply = {"code": 1, "result": None}
                        else:
                            if reply.get("node"):
                                say(f"{head}: computed on {reply['node']}")
                        code = reply["code"]
                        if code < 0:
                            say(f"{head}: its worker process was killed by signal {-code}")
                        status = finish_run(run, art, store, head, staging, resume_dir, code, reply["result"])
                        counts[status] += 1
                    finally:
                        claim.close()
        finally:
            for ref, (_, _, _, _, claim) in inflight.items():  # Ctrl-C or an error: nothing else is committed
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
                claim.close()
        return counts


def _short(e: BaseException) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[-1][:300] if lines else ''}"


# ------------------------------------------------------------------------------ the task side
_ZYGOTE = None  # (env items, Workers): one zygote per Ray worker process, reused by its tasks


def _run_task(job: dict, env: dict, head: str) -> dict:
    """A Ray task: the job computed in a fresh process forked from this Ray worker's zygote;
    {"code", "result", "node"} (``code`` < 0: the computing process was killed by that signal)."""
    global _ZYGOTE
    from harness.execution.runner import Workers

    class TaskWorkers(Workers):
        def _end_like_worker(self, sig, head):  # a killed computation fails its run; the Ray worker goes on
            self.close(kill=True)

    key = tuple(sorted(env.items()))
    if _ZYGOTE is None or _ZYGOTE[0] != key or _ZYGOTE[1]._proc is None:
        if _ZYGOTE is not None:
            _ZYGOTE[1].close()
        for k in [k for k in os.environ if k.startswith(ENV_PREFIXES)]:
            del os.environ[k]
        os.environ.update(env)
        _ZYGOTE = (key, TaskWorkers())
    workers = _ZYGOTE[1]
    code, result = workers.run(job, head)
    return {"code": code, "result": result, "node": f"{socket.gethostname()} (pid {os.getpid()})"}

