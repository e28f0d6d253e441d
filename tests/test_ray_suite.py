"""A suite over a Ray cluster: every (task, model) unit as a Ray task, the family-level
stages on the driver. A local Ray instance on this machine (2 CPUs, loopback only) runs
two planted tasks of the tiny organisms with a limit; its ``suite.json`` must equal the
local executor's byte for byte and its per-model records within 1e-5 (a Ray worker
runs torch on one thread, this process on two: float sums may differ in the last bits).
A unit that fails once is retried by Ray; one that fails again is named in
``suite.json`` while the other units finish; a killed driver resumes from the records.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# the test's Ray instance listens on loopback only (Ray reads this when it is imported)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray", reason="Ray is the optional 'cluster' extra "
                          "(pip install -e '.[cluster]'); `make test` installs it")

from diagnose import cli  # noqa: E402
from diagnose.executors import RayExecutor, run_unit  # noqa: E402
from diagnose.pipeline import RunConfig, run_suite  # noqa: E402
from experiments.scale.parity import compare_records  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("memo_trap", "belief_bias")
LIMIT = 4


def suite_inputs(family_dir: str, classifier: str, only: tuple[str, ...] = TASKS):
    """The family, planted tasks of its own world (first LIMIT examples) and the run
    settings: the same for the local run, the Ray run and the killed driver."""
    from diagnose.families import load_family_manifest
    from experiments.organisms.family import load_config
    from experiments.organisms.planted import planted_tasks

    tasks = [t.subset(range(min(LIMIT, len(t))))
             for t in planted_tasks(load_config(family_dir), "all", controls=True)
             if t.name in only]
    # mitigate_all: the tiny family's trends are not inverse; the units (and the driver's
    # second wave, ``executor.mitigate``) still have to compute the mitigation records
    cfg = RunConfig(classifier=classifier, probes=False, mitigations=("pad",), mitigate_all=True)
    return load_family_manifest(family_dir), tasks, cfg


def drive(family_dir: str, classifier: str, out: str, address: str | None,
          only: tuple[str, ...] = TASKS) -> list:
    """A driver: the suite with the Ray executor (a subprocess in the kill test)."""
    family, tasks, cfg = suite_inputs(family_dir, classifier, only)
    ex = RayExecutor(address=address).start()
    try:
        return run_suite("planted", tasks, family, out, cfg, progress=False, executor=ex)
    finally:
        ex.close()


def flaky_unit(task, family_name, spec, out_dir, cfg, what=True):
    """``run_unit`` with failures planted by ``plan.json`` beside the task directories:
    ``transient`` units fail on their first attempt, ``permanent`` ones on every attempt.
    Each attempt leaves a file, so the test counts Ray's retries."""
    root = Path(out_dir).parent
    plan = json.loads((root / "plan.json").read_text())
    marks = root / "attempts"
    marks.mkdir(exist_ok=True)
    n = len(list(marks.glob(f"{task.name}--{spec.id}--*")))
    (marks / f"{task.name}--{spec.id}--{n}").touch()
    unit = [task.name, spec.id]
    if unit in plan["permanent"] or (unit in plan["transient"] and n == 0):
        raise RuntimeError(f"planted failure of {task.name}/{spec.id} (attempt {n + 1})")
    return run_unit(task, family_name, spec, out_dir, cfg, what)


@pytest.fixture(scope="module")
def setup(tiny_organisms, tmp_path_factory):
    from diagnose.classifier import CauseModel
    from diagnose.classify_stage import TaskUnit, training_rows
    from tests.synthetic import unit
    from tests.test_classifier import DESIGNS

    _, fam_dir = tiny_organisms
    root = tmp_path_factory.mktemp("raysuite")
    # a classifier fitted on synthetic mechanisms (as test_pipeline): the organisms' own
    # fit would run the whole default family
    units = [TaskUnit(c, "A", c, False, unit(c, v, seed=k))
             for k, (c, v) in enumerate(DESIGNS["A"].items())]
    units += [TaskUnit(f"ctrl-{c}", "A", "no_inverse_scaling", True, unit(None, v, seed=9 + k))
              for k, (c, v) in enumerate(DESIGNS["A"].items())]
    X, y, _ = training_rows(units, augment=2)
    CauseModel().fit(X, y).save(root / "clf.json")
    family, tasks, cfg = suite_inputs(str(fam_dir), str(root / "clf.json"))
    t0 = time.time()
    rows = run_suite("planted", tasks, family, root / "local", cfg, progress=False)
    seconds = time.time() - t0
    assert [r["task"] for r in rows] == list(TASKS) and not any(r.get("error") for r in rows)
    return {"root": root, "family_dir": str(fam_dir), "clf": str(root / "clf.json"),
            "family": family, "tasks": tasks, "cfg": cfg, "local_seconds": seconds}


@pytest.fixture(scope="module")
def cluster(setup):
    """A Ray instance for this machine only: 2 CPUs, every server on loopback; workers
    import this checkout."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                            if p))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        assert address.startswith("127.0.0.1:"), address
        yield address
    finally:
        ray.shutdown()
        mp.undo()


def _same_as_local(setup, out: Path, only: tuple[str, ...] = TASKS) -> None:
    local = setup["root"] / "local"
    if only == TASKS:
        assert (out / "suite.json").read_bytes() == (local / "suite.json").read_bytes()
    else:
        rows = {r["task"]: r for r in json.loads((local / "suite.json").read_text())["tasks"]}
        got = json.loads((out / "suite.json").read_text())["tasks"]
        assert got == [rows[t] for t in only]
    for t in only:
        c = compare_records(local / t, out / t)
        assert c["equal"] and c["max_abs"] <= 1e-5, (t, c)
        assert {k.split("/")[0] for k in c["records"]} == {"capture", "readings", "mitigation"}
        assert c["n_records"] == 3 * len(setup["family"].models)


def test_ray_suite_equals_the_local_executor(setup, cluster, monkeypatch, capsys):
    import diagnose.runner as runner

    def no_load(*a, **k):
        raise AssertionError("the driver loaded a model: a unit's records were not current")

    monkeypatch.setattr(runner, "load_model", no_load)   # the driver only (workers: own process)
    out = setup["root"] / "ray"
    ex = RayExecutor().start()
    t0 = time.time()
    rows = run_suite("planted", setup["tasks"], setup["family"], out, setup["cfg"],
                     progress=False, executor=ex)
    seconds = time.time() - t0
    assert not any(r.get("error") for r in rows)
    _same_as_local(setup, out)
    # a CPU-only cluster: each unit asks for one CPU
    assert ex.requests == {(t, m.id): {"num_cpus": 1} for t in TASKS
                           for m in setup["family"].models}
    with capsys.disabled():
        print(f"\n[ray suite] {len(TASKS)} tasks x {len(setup['family'].models)} models, limit "
              f"{LIMIT}: local {setup['local_seconds']:.1f} s, ray {seconds:.1f} s (warm "
              f"cluster), ratio {seconds / setup['local_seconds']:.2f}")


def test_a_failing_unit_is_retried_then_named_while_the_others_finish(setup, cluster, tmp_path):
    out = tmp_path / "fail"
    out.mkdir()
    # the first task's records are there already (its units only check them); the
    # second task's are computed now, by the unit that does not fail
    shutil.copytree(setup["root"] / "local" / TASKS[0], out / TASKS[0])
    small, large = (m.id for m in setup["family"].models)
    (out / "plan.json").write_text(json.dumps({"transient": [[TASKS[0], small]],
                                               "permanent": [[TASKS[1], large]]}))
    ex = RayExecutor(unit=flaky_unit).start()
    rows = run_suite("planted", setup["tasks"], setup["family"], out, setup["cfg"],
                     progress=False, executor=ex)
    attempts = {}
    for p in (out / "attempts").iterdir():
        t, m, _ = p.name.split("--")
        attempts[(t, m)] = attempts.get((t, m), 0) + 1
    # TASKS[0]: the records wave (small retried once) then the mitigation wave, one each
    assert attempts == {(TASKS[0], small): 3, (TASKS[0], large): 2,
                        (TASKS[1], small): 1, (TASKS[1], large): 2}
    ok, failed = rows
    assert not ok.get("error") and ok["cause"] != "-"   # retried, then it went through
    assert large in failed["error"] and "planted failure" in failed["error"]
    assert failed["failed_units"] == [{"model": large, "attempts": 2, "error":
                                       f"RuntimeError: planted failure of {TASKS[1]}/{large} "
                                       "(attempt 2)"}]
    suite = json.loads((out / "suite.json").read_text())
    assert suite["failed"] == [TASKS[1]] and suite["tasks"][1]["failed_units"][0]["model"] == large
    # the failing task's other unit finished: its records are there
    from diagnose.store import slug

    for stage in ("capture", "readings", "mitigation"):
        assert (out / TASKS[1] / "records" / stage / f"{slug(small)}.npz").is_file()
        assert not (out / TASKS[1] / "records" / stage / f"{slug(large)}.npz").exists()


def test_a_killed_driver_resumes_from_the_records(setup, cluster, tmp_path):
    out, only = tmp_path / "killed", TASKS[1:]   # one task keeps the test short
    script = (f"from tests.test_ray_suite import drive; drive({setup['family_dir']!r}, "
              f"{setup['clf']!r}, {str(out)!r}, {cluster!r}, {only!r})")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    t_start = time.time()
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("*/records/*/*.npz")):
        time.sleep(0.1)
        assert proc.poll() is None, "the driver ended before it could be killed"
    t_kill = time.time()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in out.glob("*/records/*/*.npz")}
    assert finished, ("the driver wrote no record within 300 s, so there was nothing to resume "
                      "from (seen only on a machine loaded far beyond its cores)")
    rows = drive(setup["family_dir"], setup["clf"], str(out), cluster, only)
    print(f"\n[kill test] killed after {t_kill - t_start:.1f} s, resumed in {time.time() - t_kill:.1f} s")
    assert not any(r.get("error") for r in rows)
    for p, t in finished.items():
        assert p.stat().st_mtime_ns == t, f"{p} was recomputed"
    _same_as_local(setup, out, only)
    assert not [p for p in out.rglob("*") if p.name.startswith(".") and p.suffix == ".tmp"]


def test_an_unreachable_ray_address_is_one_line(setup, tmp_path, capsys):
    (tmp_path / "t.jsonl").write_text(json.dumps({"prompt": "a b", "classes": [" c", " d"],
                                                  "answer_index": 0}) + "\n")
    rc = cli.main(["run", "--suite", "isp", str(tmp_path), "--family",
                   setup["family_dir"], "--executor", "ray", "--ray-address", "127.0.0.1:9",
                   "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "--ray-address 127.0.0.1:9: nothing answers at 127.0.0.1:9" in err[0]
    assert not (tmp_path / "o").exists()
