"""Executing a plan: each planned run -> a committed run folder (claimed, trained, evaluated, renamed
into place). Planning lives in :mod:`harness.execution.plan`, the algorithm-facing context in
:mod:`harness.execution.context`.

Process model: a run's numbers must not depend on what its process did before it (issue #19). The
process that calls :func:`execute` only schedules, claims and commits; it computes nothing. Every job
that computes runs in its own worker process: first one job builds the suite artifacts the remaining
runs need (π_SFT, baseline, pairs and reference log-probabilities), then one job per run trains,
evaluates and fills the run's staging folder. Workers are forked, one per job, from a *zygote*: a
fresh interpreter started once per :func:`execute` call that imports the heavy libraries and then
only forks. So every run begins from the same process state, the same preamble — imports,
environment, intra-op threads (``PREFBENCH_THREADS``, :func:`harness.core.env.apply_threads`) and
seeded global RNGs (:func:`harness.core.seeds.seed_globals`) — whether it is the first run of a
process or the fortieth, and whether the runs before it were reused, computed or killed. This is
also how a cluster executor runs runs: one process per run.

Crash safety is that of :mod:`harness.execution.results`: this process holds the run's claim while
its worker runs; the worker writes only the staging folder and the run's mid-training checkpoint;
this process publishes the folder only after the worker exited cleanly. A worker killed by a signal
(SIGKILL, the OOM killer) is never committed, and prefbench then ends by the same signal, as it did
when runs were computed in-process; the next invocation retries the run (from its checkpoint when
it has one). Workers end with this process: the zygote and each worker ask the kernel for SIGKILL
when their parent dies, and the zygote kills its worker when this process closes the job pipe.
"""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from harness import registry
from harness.core import env, faults, interrupt, seeds, tracking
from harness.core.errors import Diverged
from harness.core.progress import say
from harness.execution.context import TrainContext
from harness.execution.plan import REFERENCE, RunSpec
from harness.execution.results import ResultsStore, read_json, write_json
from harness.training import resume


def execute(plan: list[RunSpec], art, store: ResultsStore, force: bool = False, n_resamples: int = 10000,
            save_every: int = 50) -> dict:
    """Run every planned run that is not already committed. Returns counts by outcome."""
    suite = art.suite
    counts = {"ok": 0, "diverged": 0, "failed": 0, "reused": 0, "busy": 0}
    workers = Workers(art)  # started by the first run that is computed
    stop = _StopRequests(workers)
    try:
        for k, run in enumerate(plan, 1):
            stop.check(counts)
            head = f"[{k}/{len(plan)}] {run.algorithm} seed {run.seed} ({run.run_id})"
            if not force and store.is_complete(suite.name, run.run_id):
                counts["reused"] += 1
                say(f"{head}: finished earlier, reused")
                continue
            with store.claim(suite.name, run.run_id) as mine:
                if not mine:
                    counts["busy"] += 1
                    say(f"{head}: being run by another prefbench process, skipped")
                    continue
                if not force and store.is_complete(suite.name, run.run_id):  # finished while we waited
                    counts["reused"] += 1
                    say(f"{head}: finished earlier, reused")
                    continue
                say(f"{head}: running")
                try:
                    if not workers.prepared:
                        workers.prepare(_artifacts_needed(plan[k - 1:]), head)
                    status = _execute_in_worker(workers, run, art, store, head, n_resamples, save_every)
                except StoppedBySignal as e:
                    e.counts = counts
                    raise
                counts[status] += 1
        stop.check(counts)
    finally:
        stop.restore()
        workers.close()
    return counts


class StoppedBySignal(Exception):
    """prefbench was asked to stop (Ctrl-C, SIGTERM) and stopped cleanly; ``counts`` so far."""

    def __init__(self, signum: int, counts: dict):
        self.signum, self.counts = signum, counts
        super().__init__(interrupt.name(signum))

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _StopRequests:
    """The scheduling process's side of Ctrl-C and SIGTERM while it executes a plan: the first signal
    is forwarded to the running worker (which saves a checkpoint at its next step and stops) and no
    further run starts; a second is forwarded too (the worker stops at once); a third ends prefbench."""

    def __init__(self, workers: Workers):
        self.workers, self.signum, self.count = workers, None, 0
        self._old = {}
        try:
            for s in interrupt.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread: signals keep their default meaning
            self._old = {}

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.count += 1
        if self.signum is None:
            self.signum = signum
            # os.write: a signal handler must not re-enter a buffered stream that may be mid-write
            os.write(2, f"\nprefbench: {interrupt.name(signum)} received: stopping after the current step "
                        "(saving a checkpoint); send it again to stop at once\n".encode())
        if self.count >= 3:
            self.restore()
            self.workers.close(kill=True)
            raise KeyboardInterrupt
        self.workers.forward(signum)

    def check(self, counts: dict) -> None:
        if self.signum is not None:
            raise StoppedBySignal(self.signum, counts)

    def restore(self) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}


def _artifacts_needed(rest: list[RunSpec]) -> list[str]:
    """The suite artifacts the rest of the plan (``rest[0]``: the run about to be computed) needs, in
    the order the runs reach them: π_SFT, then what the first run uses first (a reference row
    evaluates, a trained run trains). Reference rows alone never need the pairs."""
    order = ["reference", "baseline", "pairs"] if rest[0].algorithm == REFERENCE else ["reference", "pairs", "baseline"]
    if all(r.algorithm == REFERENCE for r in rest):
        order.remove("pairs")
    return order


def _execute_in_worker(workers: Workers, run: RunSpec, art, store: ResultsStore, head: str, n_resamples: int,
                       save_every: int) -> str:
    """One claimed run: computed by a worker into a staging folder, then committed here."""
    suite = art.suite
    staging = store.staging_dir(suite.name, run.run_id)
    resume_dir = store.checkpoint_dir(suite.name, run.run_id)
    code, result = workers.run({"kind": "run", "run": run, "head": head, "staging": str(staging),
                                "resume_dir": str(resume_dir), "n_resamples": n_resamples,
                                "save_every": save_every, "seed": seeds.derive(run.seed, "process-globals")}, head)
    if result and "interrupted" in result:
        i = result["interrupted"]
        where = (f"its {i['what']} state was saved at step {i['step']}; running the same command again resumes "
                 "from there" if i["step"] is not None else
                 f"stopped during {i['what'] or 'its evaluation'}; running the same command again runs it again"
                 + (" from its last checkpoint" if (resume_dir / resume.META).is_file() else ""))
        say(f"{head}: stopped by {interrupt.name(i['signal'])}; nothing of it was committed; {where}")
        raise StoppedBySignal(i["signal"], {})
    return finish_run(run, art, store, head, staging, resume_dir, code, result)


def finish_run(run: RunSpec, art, store: ResultsStore, head: str, staging: Path, resume_dir: Path, code: int,
               result: dict | None) -> str:
    """Commit a claimed run whose worker ended with ``code`` and ``result`` (or commit nothing); its
    status. Shared by every executor: the process holding the run's claim calls it."""
    suite = art.suite
    if code != 0 or not result or result.get("status") not in ("ok", "diverged", "failed"):
        # nothing is committed: the staging folder is removed by the next claim of this run
        say(f"{head}: failed: its worker process exited with status {code} (output above); nothing was "
            "committed. Re-running retries it")
        return "failed"
    art.built.extend(result.get("built", []))
    status = result["status"]
    record = read_json(staging / "metrics.json")
    faults.point("run:commit")
    store.commit(staging, suite.name, run.run_id)
    resume.clear(resume_dir)
    if status == "ok":
        metrics = record["metrics"]
        say(f"{head}: done in {record['timing']['total_seconds']:.0f}s: gold reward {metrics['gold_reward']:.3f}, "
            f"win rate {metrics['win_rate']:.3f}, KL {metrics['kl']:.2f} nats")
    return status


# --------------------------------------------------------------------------------------- the worker side
def _execute_one(run: RunSpec, art, staging: Path, resume_dir: Path, head: str, n_resamples: int,
                 save_every: int = 50) -> str:
    """Train and evaluate one run into ``staging`` (in a worker); returns its status (ok / diverged /
    failed). Publishing the folder is the scheduling process's job."""
    from harness.evaluation.evaluate import evaluate_policy

    suite = art.suite
    versions, hw, commit = env.library_versions(), env.hardware(), env.git_commit()
    config = {**run.identity, "run_id": run.run_id, "artifacts": art.hashes(), "library_versions": versions,
              "hardware": hw, "git_commit": commit, "judge": art.judge.identity,
              "trust_remote_code": suite.policy.trust_remote_code}
    if suite.pairs.kind == "dataset":  # rows, drops, length policy and gold check of the data (report protocol)
        config["pairs_load"] = art.pairs_load_report()
    write_json(staging / "config.json", config)
    eval_seed = seeds.derive(run.seed, "eval-sampling")

    def eval_checkpoint(model, label):
        _, m = evaluate_policy(model, art, eval_seed, n_resamples=1000, desc=label)
        return m

    from harness.training import device, lora
    from harness.training.hparams import lora_settings

    ctx = TrainContext(art, run.seed, staging, run.identity["preset"]["eval_checkpoints"], eval_checkpoint,
                       resume_dir, save_every, lora=lora_settings(run.config))
    tracking.start(suite.name, run.run_id, config)  # --report-to: live curves (the run folder stays the record)
    status, failure, metrics, timing = "ok", None, {}, {}
    t0 = time.time()
    try:
        algo = registry.get(run.algorithm).cls(run.config)
        model = algo.train(ctx)
        model = lora.finish(model, staging)  # LoRA: adapter saved to the run folder, a merged copy evaluated
        timing["train_seconds"] = round(time.time() - t0, 2)
        t1 = time.time()
        samples, metrics = evaluate_policy(model, art, eval_seed, n_resamples=n_resamples, desc=run.algorithm)
        timing["eval_seconds"] = round(time.time() - t1, 2)
        samples.to_parquet(staging / "samples.parquet")
    except Diverged as e:
        status, failure = "diverged", {"step": e.step, "reason": e.reason}
        say(f"{head}: diverged at step {e.step}: {e.reason}")
    except Exception as e:  # one broken run must not end a sweep; it is recorded and retried next time
        status, failure = "failed", {"reason": f"{type(e).__name__}: {e}"}
        (staging / "traceback.txt").write_text(traceback.format_exc())
        say(f"{head}: failed: {type(e).__name__}: {e} (traceback in the run folder)")
    finally:
        ctx.close()
    timing["total_seconds"] = round(time.time() - t0, 2)
    tracking.finish(status, metrics)
    write_json(staging / "metrics.json", {
        "run_id": run.run_id, "suite": suite.name, "suite_version": suite.version, "preset": art.preset_name,
        "algorithm": run.algorithm, "variant": run.variant, "hyperparameters": run.hyperparameters,
        "seed": run.seed, "status": status, "failure": failure, "metrics": metrics,
        "trajectory": ctx.trajectory, "extra": ctx.extra, "timing": timing, "library_versions": versions,
        "resources": device.current().as_dict()})
    return status


def _build_artifacts(art, kinds: list[str]) -> None:
    """Build (or find) the suite artifacts named in ``kinds``, in that order. A build that fails is
    left to the runs that need it: each tries again and records the failure in its folder."""
    getters = {"reference": lambda: art.reference_dir, "baseline": lambda: art.baseline, "pairs": lambda: art.pairs}
    try:
        for kind in kinds:
            getters[kind]()
    except Exception:  # noqa: BLE001 -- reported by the run that needs the artifact
        pass


def _run_job(job: dict) -> dict:
    """A job: ``prepare`` (suite artifacts), ``run`` (one run), or ``call`` (functions named
    ``module:attribute``, called in order with their arguments; their return values are the result:
    for diagnostics and tests of the workers themselves)."""
    if job["kind"] == "call":
        import importlib

        values = []
        for target, args in job["calls"]:
            module, _, attr = target.partition(":")
            fn = importlib.import_module(module)
            for part in attr.split("."):
                fn = getattr(fn, part)
            values.append(fn(*args))
        return {"values": values}
    from harness.evaluation.sampling import get_sampler
    from harness.execution.artifacts import SuiteArtifacts

    if job.get("sampling_server"):  # the sweep's one engine, in a process of its own
        from harness.evaluation.sampling.server import connect

        sampler = connect(job["sampling_server"])
    else:
        sampler = get_sampler(job["sampler"])
    art = SuiteArtifacts(job["suite"], job["preset"], job["cache_root"], sampler)
    try:
        if job["kind"] == "prepare":
            _build_artifacts(art, job["artifacts"])
            return {"built": list(art.built)}
        status = _execute_one(job["run"], art, Path(job["staging"]), Path(job["resume_dir"]), job["head"],
                              job["n_resamples"], job["save_every"])
        return {"status": status, "built": list(art.built)}
    finally:
        getattr(sampler, "close", lambda: None)()


def _worker_main(job: dict, result_fd: int, zygote: int) -> None:
    """A forked worker: the preamble every job gets, the job, its result on ``result_fd``; never returns."""
    code = 1
    try:
        env.die_with_parent(zygote)
        interrupt.install()  # Ctrl-C / SIGTERM (forwarded by the zygote): save what can be saved, stop
        if job["fault"]:
            os.environ["PREFBENCH_FAULT"] = job["fault"]
        else:
            os.environ.pop("PREFBENCH_FAULT", None)
        env.apply_threads()
        env.quiet_libraries()
        from harness.training import device

        device.configure(job.get("resources"))  # device, precision, micro-batch of the invocation
        seeds.seed_globals(job["seed"])
        result = _run_job(job)
        target = faults.parse(job["fault"])[0] if job["fault"] else ""
        result["fault_hits"] = faults._counts.get(target, 0) if target else 0  # noqa: SLF001
        with os.fdopen(result_fd, "wb") as f:
            pickle.dump(result, f)
        code = 0
    except interrupt.Interrupted as e:  # reported by the scheduling process, which asked for the stop
        code = e.exit_code
        try:
            with os.fdopen(result_fd, "wb") as f:
                pickle.dump({"interrupted": {"signal": e.signum, "step": e.step, "what": e.what}}, f)
        except OSError:
            pass
    except BaseException:  # noqa: BLE001 -- the scheduling process reports the status, the traceback is here
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


# ------------------------------------------------------------------------------------- the zygote
def _preload() -> None:
    """What every worker uses, imported once in the zygote, so each forked worker starts with it: numpy,
    pandas, torch, transformers (with the model classes of the embedded suites) and prefbench's own
    modules. Nothing here computes with torch (no OpenMP thread pool exists before the fork) or touches
    an accelerator (CUDA must not be initialised before a fork)."""
    import contextlib
    import io

    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import safetensors.torch  # noqa: F401
    import torch  # noqa: F401
    import tqdm.auto  # noqa: F401
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,  # noqa: F401
                              GPT2LMHeadModel, LlamaForCausalLM, PreTrainedTokenizerFast)

    from harness.evaluation import evaluate  # noqa: F401
    from harness.evaluation.sampling import hf  # noqa: F401
    from harness.execution import artifacts  # noqa: F401
    from harness.training import logprobs, loop, models  # noqa: F401

    with contextlib.redirect_stderr(io.StringIO()):  # a broken plugin was reported by the scheduling process
        registry.discover()


def _uses_trl(job: dict) -> bool:
    """The job trains with TRL: a TRL-backed algorithm's run, or the build of the reward model."""
    if job.get("kind") == "prepare":
        return "reward_model" in (job.get("artifacts") or ())
    run = job.get("run")
    try:
        return "trl" in registry.get(run.algorithm).cls.patched_libraries
    except Exception:  # noqa: BLE001 -- an unknown algorithm is the worker's to report
        return False


def _preload_trl() -> None:
    """TRL's imports, once per zygote, before the first job that trains with TRL (see _preload)."""
    import contextlib
    import io

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # TRL's version warnings; the worker shows its own
            from harness.adapters import preload_trl

            preload_trl()
    except Exception:  # noqa: BLE001 -- the worker imports again and reports the real error
        pass


def _zygote_main(job_fd: int, result_fd: int, parent: int) -> None:
    """Serve jobs from ``job_fd``: fork a worker per job, wait for it, answer {"code", "result"} on
    ``result_fd``. Ends when the scheduling process closes the job pipe (or dies)."""
    env.die_with_parent(parent)
    current = {"pid": None}

    def forward(signum, frame):  # noqa: ARG001 -- the scheduling process's stop request, for the worker
        if current["pid"]:
            try:
                os.kill(current["pid"], signum)
            except ProcessLookupError:
                pass

    for s in interrupt.SIGNALS:
        signal.signal(s, forward)
    _preload()
    jobs, results = os.fdopen(job_fd, "rb"), os.fdopen(result_fd, "wb")
    me = os.getpid()
    trl_loaded = False
    while True:
        try:
            job = pickle.load(jobs)
        except EOFError:
            os._exit(0)
        if not trl_loaded and _uses_trl(job):
            _preload_trl()
            trl_loaded = True
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.close(job_fd)
            os.close(result_fd)
            _worker_main(job, w, me)
        os.close(w)
        current["pid"] = pid
        code = _wait(pid, job_fd)
        current["pid"] = None
        chunks = []
        while chunk := os.read(r, 1 << 16):
            chunks.append(chunk)
        os.close(r)
        try:
            result = pickle.loads(b"".join(chunks)) if chunks else None
        except Exception:  # noqa: BLE001 -- a worker killed mid-write
            result = None
        pickle.dump({"code": code, "result": result}, results)
        results.flush()


def _wait(pid: int, watch_fd: int) -> int:
    """The worker's exit status (negative: killed by that signal). If ``watch_fd`` becomes readable
    meanwhile (the scheduling process closed the job pipe or died), the worker is killed and the
    zygote ends."""
    import select

    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        while True:
            fds = [watch_fd] if pidfd is None else [watch_fd, pidfd]
            ready, _, _ = select.select(fds, [], [], 0.05 if pidfd is None else None)
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            if watch_fd in ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                os._exit(0)
    finally:
        if pidfd is not None:
            os.close(pidfd)


class Workers:
    """The scheduling side: starts the zygote on first use, sends it jobs one at a time. ``art``: the
    plan's suite artifacts (None for ``call`` jobs only)."""

    def __init__(self, art=None):
        self.art = art
        self.prepared = False
        self._proc: subprocess.Popen | None = None
        spec = os.environ.get("PREFBENCH_FAULT") or ""
        target, nth, sig = faults.parse(spec) if spec else ("", 0, "")
        # fault points inside workers count over the whole invocation, as when runs were in-process
        self._fault = (target, nth, sig) if target and target != "run:commit" else None
        self._fault_hits = 0
        self._sampling = None  # the sweep's vLLM engine server (started by the first job that needs it)

    def prepare(self, kinds: list[str], head: str) -> None:
        """Build the suite artifacts in a worker of their own, so no run computes them in its process."""
        self.prepared = True
        code, result = self.run({"kind": "prepare", "artifacts": kinds,
                                 "seed": seeds.derive(self.art.suite.seed, "process-globals")}, head)
        if result and "interrupted" in result:
            i = result["interrupted"]
            saved = f"its state was saved at step {i['step']}" if i["step"] is not None else "nothing was saved"
            say(f"building the suite artifacts ({i['what'] or ', '.join(kinds)}) stopped by "
                f"{interrupt.name(i['signal'])}; {saved}; running the same command again continues")
            raise StoppedBySignal(i["signal"], {})
        if code == 0 and result:
            self.art.built.extend(result.get("built", []))

    def run(self, job: dict, head: str) -> tuple[int, dict | None]:
        """(exit status, result) of ``job`` in a fresh worker. A worker killed by a signal ends this
        process by the same signal (nothing of its run is committed)."""
        self._start()
        fault = None
        if self._fault and self._fault[1] - self._fault_hits >= 1:
            fault = faults.unparse(self._fault[0], self._fault[1] - self._fault_hits, self._fault[2])
        from harness.training import device

        job = {"resources": device.current().as_dict(), **job, "fault": fault}  # a job may bring its own
        if self.art is not None:  # what a worker needs to open the suite's artifacts
            art = self.art
            job.update(suite=art.suite, preset=art.preset_name, cache_root=str(art.cache.root.parent),
                       sampler=art.sampler.name)
            if art.sampler.name == "vllm":  # one engine for every run of the sweep, not one per worker
                from harness.evaluation.sampling.server import SamplingServer

                self._sampling = self._sampling or SamplingServer(art.sampler.name)
                job["sampling_server"] = self._sampling.endpoint()
        try:
            pickle.dump(job, self._jobs)
            self._jobs.flush()
            reply = pickle.load(self._results)
        except (BrokenPipeError, EOFError):
            reply = {"code": self._proc.wait(), "result": None}  # the zygote itself ended
        code, result = reply["code"], reply["result"]
        if result:
            self._fault_hits += result.get("fault_hits", 0)
        if code < 0:
            self._end_like_worker(-code, head)
        return code, result

    def _end_like_worker(self, sig: int, head: str) -> None:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        say(f"{head}: its worker process was killed by {name}; nothing of it was committed. prefbench stops "
            "the same way; running it again retries the run")
        self.close(kill=True)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        if sig == signal.SIGINT:
            raise KeyboardInterrupt
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        raise SystemExit(128 + sig)  # a signal whose default action does not end a process

    def _start(self) -> None:
        if self._proc is not None:
            return
        job_r, job_w = os.pipe()
        res_r, res_w = os.pipe()
        child_env = dict(os.environ)
        child_env.pop("PREFBENCH_FAULT", None)  # passed per job, counted over the invocation
        if self._fault and self._fault[2]:  # a signal fault is sent to this process (harness.core.faults)
            child_env["PREFBENCH_MAIN_PID"] = str(os.getpid())
        child_env.setdefault("PYTHONHASHSEED", "0")  # set and dict orders do not vary between processes
        root = str(Path(__file__).resolve().parents[2])
        boot = (f"import sys; sys.path.insert(0, {root!r}); from harness.execution.runner import _zygote_main; "
                f"_zygote_main({job_r}, {res_w}, {os.getpid()})")
        try:
            # a session of its own: Ctrl-C and a process-group SIGTERM reach only this process, which
            # forwards them once (Workers.forward), so a worker sees each stop request exactly once
            self._proc = subprocess.Popen([sys.executable, "-c", boot], pass_fds=(job_r, res_w),
                                          stdin=subprocess.DEVNULL, env=child_env, start_new_session=True)
        finally:
            os.close(job_r)
            os.close(res_w)
        self._jobs, self._results = os.fdopen(job_w, "wb"), os.fdopen(res_r, "rb")

    def forward(self, signum: int) -> None:
        """Pass a stop request to the running worker (through the zygote)."""
        if self._proc is not None:
            try:
                os.kill(self._proc.pid, signum)
            except ProcessLookupError:
                pass

    def close(self, kill: bool = False) -> None:
        """End the zygote (a running worker ends with it) and the sampling server."""
        if self._sampling is not None:
            self._sampling.close(kill=kill)
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        for f in (self._jobs, self._results):
            try:
                f.close()
            except OSError:
                pass
        if kill:
            proc.kill()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
