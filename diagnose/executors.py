"""Where the (task, model) units of a suite run: in this process, or as Ray tasks.

A unit is every per-model record of one model for one task (``diagnose.runner``: the
records are self-contained, keyed by their inputs, written atomically). The local
executor lets ``run_task`` compute them in this process, one model in memory at a time,
as it always has. The Ray executor submits each unit as a Ray task with its resource
request (``num_gpus`` from the model's size and dtype where the cluster has GPUs,
``num_cpus`` otherwise); the workers write into the same records (a filesystem every
node sees), and the driver then runs each task's family-level stages (score tables,
trend, probes report, verdict, mitigations, report) with ``run_task`` once its units are
in: every record is current, so no model is loaded there. A killed driver resumes from
the records; a unit that raises is retried by Ray (``max_retries``, application errors
included) and, if it fails again, its task is recorded in ``suite.json`` with the
unit's error while the other units finish.

Ray is an optional extra (``pip install 'inverse-scaling-diagnose[cluster]'``) and is
imported here only, when the Ray executor starts.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import sys
from pathlib import Path
from typing import Any, Callable, Sequence


class ExecutorError(RuntimeError):
    """The executor cannot start (Ray missing, a cluster address nothing answers at)."""


class UnitFailed(RuntimeError):
    """A task's unit failed on every attempt; the message names the model and the error."""

    def __init__(self, task: str, failures: list[dict[str, Any]]):
        self.task, self.failures = task, failures
        parts = [f"model {f['model']} failed after {f['attempts']} attempt(s): {f['error']}"
                 for f in failures]
        super().__init__("; ".join(parts))


def run_unit(task: Any, family_name: str, spec: Any, out_dir: str, cfg: Any,
             what: bool | str = True) -> dict[str, Any]:
    """One unit: every per-model record of model ``spec`` for ``task`` under ``out_dir``
    (the task's output directory), exactly the records ``run_task`` computes for it;
    ``what="mitigation"``: the mitigation records (once the family's trend asks for them)."""
    from diagnose.families import Family
    from diagnose.pipeline import run_task

    run_task(task, Family(family_name, (spec,)), out_dir, cfg, progress=False,
             per_model_only=what)
    return {"task": task.name, "model": spec.id}


class LocalExecutor:
    """Units run inside ``run_task`` in this process (one model in memory at a time)."""

    name = "local"

    def start(self) -> "LocalExecutor":
        return self

    def submit(self, tasks: Sequence[Any], family: Any, out: Path, cfg: Any) -> None:
        pass

    def wait(self, task_name: str) -> None:
        pass

    def mitigate(self, task: Any, family: Any, out: Path, cfg: Any) -> None:
        pass  # run_task computes them here

    def close(self) -> None:
        pass


# --- resources -------------------------------------------------------------------------


def estimate_params(spec: Any) -> int | None:
    """The model's parameter count: the family's figure, else its config built on the meta
    device (no weights read), else None."""
    if getattr(spec, "n_params", None):
        return int(spec.n_params)
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(spec.source)
        with torch.device("meta"):
            shell = AutoModelForCausalLM.from_config(config)
        return int(sum(p.numel() for p in shell.parameters()))
    except Exception:  # noqa: BLE001 - an estimate only: unknown is fine
        return None


_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}


def unit_resources(spec: Any, dtype: str | None, cluster_gpus: float, gpu_memory: float,
                   unit_cpus: float = 1, overhead: float = 1.3) -> dict[str, float]:
    """The Ray resource request of one unit: where the cluster has GPUs, as many whole
    GPUs as the weights need (parameters x bytes per parameter in the run's dtype, bf16
    for ``auto``, x ``overhead`` for activations and buffers, over ``gpu_memory`` bytes
    per GPU; at least one); otherwise ``unit_cpus`` CPUs."""
    if cluster_gpus <= 0:
        return {"num_cpus": unit_cpus}
    n = estimate_params(spec)
    per = _BYTES.get(str(dtype or "auto").replace("torch.", ""), 2)
    need = 1 if n is None else max(1, math.ceil(n * per * overhead / gpu_memory))
    return {"num_gpus": need, "num_cpus": unit_cpus}


# --- ray -------------------------------------------------------------------------------


def _import_ray(local: bool = False):
    if local and "ray" not in sys.modules:
        # a Ray instance for this machine only: its servers listen on loopback (Ray reads
        # this when it is imported)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise ExecutorError("--executor ray needs Ray, which is not installed: pip install "
                            "'inverse-scaling-diagnose[cluster]' (or 'ray[default]>=2.9'), or "
                            "drop --executor ray to run the suite here") from None
    return ray


def _check_address(address: str) -> None:
    """One clear line, at once, when nothing answers at ``host:port`` (ray.init would
    retry for a long while before failing with a trace)."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(f"--ray-address {address!r}: expected HOST:PORT (the head node's "
                            "GCS address printed by `ray start --head`), ray://HOST:PORT "
                            "(Ray Client) or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except OSError as e:
        raise ExecutorError(f"--ray-address {address}: nothing answers at {host}:{port} "
                            f"({e.strerror or e}); start the cluster with `ray start --head` "
                            "on that machine, or check the address and port") from None


class RayExecutor:
    """Units as Ray tasks on a cluster (``address``) or on a Ray instance started here.

    ``unit`` is the function a worker runs (``run_unit``; a test may wrap it).
    ``max_retries``: further attempts of a unit that raised or whose worker died.
    ``gpu_memory``: bytes per GPU, for sizing ``num_gpus`` (default: this machine's
    first GPU, else 80 GiB). ``unit_cpus``: CPUs per unit on a CPU-only cluster.
    """

    name = "ray"

    def __init__(self, address: str | None = None, max_retries: int = 1,
                 gpu_memory: float | None = None, unit_cpus: float = 1,
                 num_cpus: int | None = None, unit: Callable[..., Any] = run_unit):
        self.address, self.max_retries = address, int(max_retries)
        self.gpu_memory, self.unit_cpus, self.num_cpus = gpu_memory, unit_cpus, num_cpus
        self.unit = unit
        self._ray: Any = None
        self._started = False
        self._refs: dict[str, list[tuple[str, Any]]] = {}
        self.requests: dict[tuple[str, str], dict[str, float]] = {}

    def start(self) -> "RayExecutor":
        ray = _import_ray(local=not self.address)
        self._ray = ray
        if self.address:
            _check_address(self.address)
        if ray.is_initialized():  # a driver that started Ray itself (a notebook, a test)
            return self
        try:
            ray.init(address=self.address or None, num_cpus=None if self.address else
                     self.num_cpus, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ExecutorError(f"--ray-address {self.address or '(local)'}: Ray could not "
                                f"connect ({str(e).splitlines()[0][:300]}); check that the "
                                "cluster is up (`ray status` on the head node)") from None
        self._started = True
        return self

    def _gpu_memory(self) -> float:
        if self.gpu_memory:
            return float(self.gpu_memory)
        try:
            import torch

            if torch.cuda.is_available():
                return float(torch.cuda.get_device_properties(0).total_memory)
        except Exception:  # noqa: BLE001
            pass
        return 80.0 * 2 ** 30

    def submit(self, tasks: Sequence[Any], family: Any, out: Path, cfg: Any,
               what: bool | str = True) -> None:
        ray = self._ray
        gpus = float(ray.cluster_resources().get("GPU", 0))
        remote = ray.remote(self.unit)
        out = Path(out).resolve()  # workers may start elsewhere: absolute paths only
        for task in tasks:
            refs = []
            for spec in family.models:
                req = unit_resources(spec, cfg.dtype, gpus, self._gpu_memory(), self.unit_cpus)
                ucfg = cfg
                if req.get("num_gpus", 0) > 1 and cfg.dispatch is None:
                    from diagnose.dispatch import Dispatch

                    # a unit given several GPUs spreads its model over them
                    ucfg = dataclasses.replace(cfg, dispatch=Dispatch(device_map="auto"))
                self.requests[(task.name, spec.id)] = req
                ref = remote.options(**req, max_retries=self.max_retries, retry_exceptions=True,
                                     name=f"diagnose:{task.name}:{spec.id}"[-120:]).remote(
                    task, family.name, spec, str(out / task.name), ucfg, what)
                refs.append((spec.id, ref))
            self._refs[task.name] = refs

    def wait(self, task_name: str) -> None:
        """Block until every unit of ``task_name`` has finished; ``UnitFailed`` names the
        units that failed on every attempt (the others' records are written)."""
        ray = self._ray
        failures = []
        for model_id, ref in self._refs.get(task_name, []):
            try:
                ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                cause = getattr(e, "cause", None)
                msg = (f"{type(cause).__name__}: {cause}" if cause is not None
                       else str(e).strip().splitlines()[-1])
                failures.append({"model": model_id, "error": msg.splitlines()[0][:300],
                                 "attempts": self.max_retries + 1})
            except ray.exceptions.RayError as e:  # worker or node died on every attempt
                failures.append({"model": model_id, "attempts": self.max_retries + 1,
                                 "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"})
        if failures:
            raise UnitFailed(task_name, failures)

    def mitigate(self, task: Any, family: Any, out: Path, cfg: Any) -> None:
        """A second wave for a task whose trend asks for mitigations: its mitigation
        records are computed by units too, so the driver still loads no model."""
        self.submit([task], family, Path(out).parent, cfg, what="mitigation")
        self.wait(task.name)

    def close(self) -> None:
        if self._started and self._ray is not None:
            self._ray.shutdown()
        self._started = False


def make_executor(name: str, address: str | None = None, **kw: Any):
    if name == "local":
        if address:
            raise ExecutorError("--ray-address needs --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address=address, **kw)
    raise ExecutorError(f"--executor {name!r}: use local or ray")
