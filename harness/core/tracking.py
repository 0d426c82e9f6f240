"""Live tracking (``prefbench run --report-to none|tensorboard|wandb|mlflow``): every run's training
curves and final metrics sent to an experiment tracker as they happen, named by the run id.

The results folder stays the source of truth: nothing a tracker holds is read back, a tracker that
fails is reported once and then ignored (the run goes on), and tracker files never go inside a run
folder. The choice travels to the worker processes in the environment (``PREFBENCH_REPORT_TO``,
``PREFBENCH_TRACKING_DIR``, set by the CLI), so the local and the Ray executor pass it the same way.

Hooks: the worker computing a run calls :func:`start` (run id and config) and :func:`finish` (status
and final metrics); :class:`~harness.execution.context.TrainContext` forwards every step log
(``train/<name>``) and every intermediate evaluation (``eval/<name>``) through :func:`log`. TRL-backed
algorithms reach ``ctx.log`` through the adapters' log bridge, so they are tracked the same way.

- ``tensorboard``: event files under ``<results>/_tracking/tensorboard/<suite>/<run-id>/`` (a retried
  run's folder is emptied first); ``tensorboard --logdir <results>/_tracking/tensorboard``.
- ``wandb``: one W&B run per prefbench run (name and id = run id, group = suite; project
  ``$WANDB_PROJECT``, default ``prefbench``; files under ``$WANDB_DIR``, default
  ``<results>/_tracking/wandb``; ``WANDB_MODE=offline`` works without a network, ``wandb sync`` uploads
  later). Curves are plotted against the metric ``step`` (the training step); final metrics go to the
  run's summary.
- ``mlflow``: one MLflow run per prefbench run (run name and tag ``prefbench.run_id`` = run id;
  ``$MLFLOW_TRACKING_URI``, default the file store ``<results>/_tracking/mlruns``; experiment
  ``$MLFLOW_EXPERIMENT_NAME``, default ``prefbench``). Final metrics are logged without a step.

Under a launcher only the main process tracks (:func:`_main_process`).
"""
from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path

from harness.core.errors import UserError

CHOICES = ("none", "tensorboard", "wandb", "mlflow")
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}

_tracker = None


def check(report_to: str) -> None:
    """``--report-to``: a known tracker whose package is installed (preflight, one line)."""
    if report_to not in CHOICES:
        raise UserError("--report-to", report_to, f"expected one of {', '.join(CHOICES)}")
    if report_to == "none":
        return
    import importlib.util

    if importlib.util.find_spec(PACKAGES[report_to]) is None:
        raise UserError("--report-to", report_to, f"the {PACKAGES[report_to]} package is not installed "
                        f"(pip install {PACKAGES[report_to]})")


def configure(report_to: str, results_root: Path) -> None:
    """In the CLI: the choice and the tracking folder for every worker process this command starts.

    ``WANDB_MODE`` moves to ``PREFBENCH_WANDB_MODE`` (read by the W&B backend) whatever the choice:
    transformers 5.19 prints "[INFO] Running in WANDB offline mode" to stdout when it imports its
    integrations with ``WANDB_MODE=offline``, which the worker processes do, and stdout is the report."""
    if "WANDB_MODE" in os.environ:
        os.environ["PREFBENCH_WANDB_MODE"] = os.environ.pop("WANDB_MODE")
    if report_to == "none":
        os.environ.pop("PREFBENCH_REPORT_TO", None)
        return
    os.environ["PREFBENCH_REPORT_TO"] = report_to
    os.environ["PREFBENCH_TRACKING_DIR"] = str(Path(results_root).resolve() / "_tracking")


def _scalars(metrics: dict, prefix: str) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            continue
        out[f"{prefix}{k}"] = float(v)
    return out


def _flat(obj, prefix: str = "") -> dict:
    out = {}
    for k, v in (obj or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, (str, int, float, bool)) or v is None:
            out[key] = v
        else:
            out[key] = str(v)
    return out


class _TensorBoard:
    def __init__(self, root: Path, suite: str, run_id: str, config: dict):
        from torch.utils.tensorboard import SummaryWriter

        folder = root / "tensorboard" / suite / run_id
        shutil.rmtree(folder, ignore_errors=True)  # a retried run starts its curves again
        self.w = SummaryWriter(log_dir=str(folder))
        self.w.add_text("config", "\n".join(f"    {k}: {v}" for k, v in sorted(_flat(config).items())), 0)

    def log(self, step: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.w.add_scalar(k, v, step)

    def finish(self, status: str, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.w.add_scalar(k, v, 0)
        self.w.add_text("status", status, 0)
        self.w.close()


def _verbose() -> bool:
    return os.environ.get("PREFBENCH_VERBOSE") == "1"


class _WandB:
    """wandb 0.31 (``requirements.txt``): tested offline (``WANDB_MODE=offline``), read back with ``wandb
    leet inspect --json``. The run's console is not captured (stdout is prefbench's report), no system
    metrics, git state or code are collected, and wandb says nothing unless ``--verbose``."""

    def __init__(self, root: Path, suite: str, run_id: str, config: dict):
        import wandb

        where = Path(os.environ.get("WANDB_DIR") or root)
        where.mkdir(parents=True, exist_ok=True)
        quiet = not _verbose()
        settings = wandb.Settings(console="off", silent=quiet, quiet=quiet, show_info=not quiet,
                                  x_disable_stats=True, x_disable_machine_info=True, x_save_requirements=False,
                                  disable_git=True, save_code=False, disable_job_creation=True)
        mode = os.environ.get("PREFBENCH_WANDB_MODE") or os.environ.get("WANDB_MODE") or None  # see configure()
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "prefbench"), name=run_id, id=run_id,
                              group=suite, config=_flat(config), dir=str(where), resume="allow",
                              reinit="finish_previous", settings=settings, mode=mode)
        # the training step as every curve's x-axis: W&B's own step must only grow, and an evaluation may
        # be logged after a later training step
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log({**values, "step": step})

    def finish(self, status: str, values: dict[str, float]) -> None:
        self.run.summary.update({**values, "status": status})
        self.run.finish(exit_code=1 if status == "failed" else 0)


class _MLflow:
    """MLflow 3.17 (``mlflow-skinny`` in ``requirements.txt``). The default tracking URI is the file store
    ``<results>/_tracking/mlruns``, which MLflow 3 keeps in maintenance mode behind
    ``MLFLOW_ALLOW_FILE_STORE``: prefbench sets that variable for the file store it chose (a server or
    database URI in ``MLFLOW_TRACKING_URI`` needs nothing). Metric names keep the characters MLflow
    accepts (others become ``_``)."""

    def __init__(self, root: Path, suite: str, run_id: str, config: dict):
        import logging

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = (root / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # read when MLflow opens the file store
        import mlflow

        if not _verbose():  # after the import, which configures MLflow's loggers: no "creating experiment" notices
            logging.getLogger("mlflow").setLevel(logging.WARNING)
        mlflow.set_tracking_uri(uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "prefbench")
        try:
            mlflow.set_experiment(name)
        except Exception:  # noqa: BLE001 -- another process created it between MLflow's look-up and create
            mlflow.set_experiment(name)
        self.mlflow = mlflow
        self.run = mlflow.start_run(run_name=run_id, tags={"prefbench.suite": suite, "prefbench.run_id": run_id})
        params = {k[:250]: str(v)[:500] for k, v in _flat(config).items()}
        for chunk in range(0, len(params), 100):
            mlflow.log_params(dict(list(params.items())[chunk:chunk + 100]))

    @staticmethod
    def _names(values: dict[str, float]) -> dict[str, float]:
        return {re.sub(r"[^A-Za-z0-9_\-. /:]", "_", k)[:250]: v for k, v in values.items()}

    def log(self, step: int, values: dict[str, float]) -> None:
        self.mlflow.log_metrics(self._names(values), step=step)

    def finish(self, status: str, values: dict[str, float]) -> None:
        self.mlflow.log_metrics(self._names(values))
        self.mlflow.set_tag("prefbench.status", status)
        self.mlflow.end_run(status="FAILED" if status == "failed" else "FINISHED")


BACKENDS = {"tensorboard": _TensorBoard, "wandb": _WandB, "mlflow": _MLflow}


def _guard(what: str, fn, *args) -> None:
    """A tracker error is said once and ends tracking for this run; the run itself goes on."""
    global _tracker
    if _tracker is None:
        return
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 -- the results folder, not the tracker, is the record
        from harness.core.progress import say

        say(f"  tracking ({os.environ.get('PREFBENCH_REPORT_TO')}): {what} failed ({type(e).__name__}: "
            f"{str(e)[:200]}); the run goes on untracked")
        _tracker = None


def start(suite: str, run_id: str, config: dict) -> None:
    """In the worker computing a run: open the run in the chosen tracker (no-op with none)."""
    global _tracker
    _tracker = None
    kind = os.environ.get("PREFBENCH_REPORT_TO", "none")
    if kind not in BACKENDS or not _main_process():
        return
    root = Path(os.environ.get("PREFBENCH_TRACKING_DIR") or "_tracking")
    try:
        _tracker = BACKENDS[kind](root, suite, run_id, config)
    except Exception as e:  # noqa: BLE001
        from harness.core.progress import say

        say(f"  tracking ({kind}): could not start ({type(e).__name__}: {str(e)[:200]}); the run goes on untracked")


def log(step: int, metrics: dict, prefix: str = "train/") -> None:
    if _tracker is not None:
        values = _scalars(metrics, prefix)
        if values:
            _guard("logging", _tracker.log, int(step), values)


def finish(status: str, metrics: dict) -> None:
    global _tracker
    if _tracker is not None:
        _guard("closing", _tracker.finish, status, _scalars(metrics, "final/"))
        _tracker = None


def _main_process() -> bool:
    from harness.training import distributed

    return distributed.is_main()
