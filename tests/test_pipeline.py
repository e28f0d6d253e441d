"""`diagnose run`: every stage end to end, determinism, resume after a kill, invalidation,
and the report as a person sees it (headless Chromium)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diagnose import cli

ROWS = []
for i, (end, a, b) in enumerate([("the heart grow", " fonder.", " heavy."),
                                 ("Actions speak louder than", " words.", " thoughts."),
                                 ("the quick brown fox jumps over the lazy", " dog.", " cat."),
                                 ("well, there you", " are.", " go.")] * 3):
    ROWS.append({"prompt": f"Write a quote that ends in the word {b.strip(' .')}: {end}",
                 "classes": [a, b], "answer_index": 1,
                 "views": {"prior": {"prompt": end, "answer_index": 0}}})


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_family_dirs):
    root = tmp_path_factory.mktemp("pipe")
    task = root / "mini-trap.jsonl"
    task.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    # a classifier fitted on synthetic mechanisms: this test is about the pipeline
    from diagnose.classifier import CauseModel
    from diagnose.classify_stage import TaskUnit, training_rows
    from tests.test_classifier import DESIGNS
    from tests.synthetic import unit

    units = [TaskUnit(c, "A", c, False, unit(c, v, seed=k))
             for k, (c, v) in enumerate(DESIGNS["A"].items())]
    units += [TaskUnit(f"ctrl-{c}", "A", "no_inverse_scaling", True, unit(None, v, seed=9 + k))
              for k, (c, v) in enumerate(DESIGNS["A"].items())]
    X, y, _ = training_rows(units, augment=2)
    CauseModel().fit(X, y).save(root / "clf.json")
    args = ["run", str(task), "--classifier", str(root / "clf.json"), "--strategy",
            "pad,few-shot", "--mitigate-all", "--no-progress"]
    for d in tiny_family_dirs:
        args += ["--model", str(d)]
    return root, task, args


def test_run_writes_every_stage_and_is_deterministic(setup):
    root, task, args = setup
    a, b = root / "a", root / "b"
    assert cli.main(args + ["--out", str(a)]) == 0
    for rel in ("run.json", "report.html", "trend.json", "classification.json",
                "score/summary.json", "score/scaling.png", "score/views/prior/summary.json",
                "probes/probes.json", "probes/lens_heatmap.png", "mitigation/mitigation.json"):
        assert (a / rel).is_file(), rel
    run = json.loads((a / "run.json").read_text())
    assert run["views"]["built"] == ["prior", "no_context"] and run["views"]["supplied"] == ["prior"]
    c = run["classification"]
    assert c["cause"]["label"] and set(c["tests"]) == {"strong_prior", "unwanted_imitation",
                                                       "distractor_task", "spurious_few_shot"}
    assert c["tests"]["spurious_few_shot"] == "untested"
    assert {s["name"] for s in run["mitigation"]["strategies"]} >= {"none", "pad", "few-shot"}
    html = (a / "report.html").read_text()
    assert html.index("Verdict") < html.index("Scaling curve") < html.index("Inside the models")
    assert "src=\"http" not in html and "<script" not in html  # self-contained, no scripts
    assert cli.main(args + ["--out", str(b)]) == 0
    # without --mitigate-all a task that does not scale inversely has nothing to mitigate
    c = root / "c"
    assert cli.main([x for x in args if x != "--mitigate-all"] + ["--out", str(c)]) == 0
    rc = json.loads((c / "run.json").read_text())
    if rc["trend"]["accuracy"]["label"] not in ("inverse", "u_shaped", "inverted_u"):
        assert "mitigation" not in rc and "no inverse scaling to mitigate" in rc["mitigation_note"]
        assert not (c / "mitigation").exists()
    for rel in ("run.json", "trend.json", "classification.json", "score/summary.json",
                "probes/probes.json", "mitigation/mitigation.json"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_killed_run_resumes_and_recomputes_only_what_was_missing(setup):
    root, task, args = setup
    out = root / "killed"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "diagnose.cli", *args, "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    marker = out / "records" / "readings"
    while time.time() < deadline and not (marker.is_dir() and any(marker.glob("*.npz"))):
        time.sleep(0.1)
        assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "run.json").exists()
    # per-(model, stage) records; everything else is re-derived from them on resume
    finished = {p: p.stat().st_mtime_ns for p in (out / "records").rglob("*.npz")}
    assert any("capture" in str(p) for p in finished) and any("readings" in str(p) for p in finished)
    assert cli.main(args + ["--out", str(out)]) == 0
    for p, t in finished.items():
        assert p.stat().st_mtime_ns == t, f"{p} was recomputed"
    # no temp file left behind, and the result equals an uninterrupted run's
    assert not [p for p in out.rglob("*") if p.name.startswith(".") and p.suffix == ".tmp"]
    for rel in ("classification.json", "run.json"):
        ref = root / "a" / rel
        if ref.is_file():
            assert (out / rel).read_bytes() == ref.read_bytes(), rel


def test_changed_task_invalidates_what_depends_on_it(setup, tmp_path):
    root, task, args = setup
    out = tmp_path / "inv"
    assert cli.main(args + ["--out", str(out)]) == 0
    from diagnose.records import load

    key = lambda: {p.name: load(p)[1]["key"]  # noqa: E731
                   for p in (out / "records" / "capture").glob("*.npz")}
    before = key()
    changed = tmp_path / "mini-trap.jsonl"
    rows = [dict(r) for r in ROWS]
    rows[0]["classes"] = [" fonder.", " lighter."]
    changed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    new_args = [changed.as_posix() if a == str(task) else a for a in args]
    assert cli.main(new_args + ["--out", str(out)]) == 0
    after = key()
    assert set(before) == set(after) and all(before[k] != after[k] for k in before)


def _chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.skipif(_chromium() is None, reason="Debian's chromium is not installed")
def test_report_renders_in_headless_chromium(setup, tmp_path):
    pw = pytest.importorskip("playwright.sync_api")
    root, _, _ = setup
    report = root / "a" / "report.html"
    if not report.is_file():
        pytest.skip("needs the first test's run")
    errors, shot = [], tmp_path / "report.png"
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        n_img = page.evaluate("document.images.length")
        broken = page.evaluate(
            "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length")
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert errors == []
    assert n_img >= 4 and broken == 0
    assert shot.stat().st_size > 20_000
    keep = os.environ.get("DIAGNOSE_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def test_suite_survives_a_failing_task_and_says_which(setup, tmp_path, capsys):
    """A file that does not load and files whose classes a tokenizer cannot score: the
    suite records the failure (suite.json, index.html), runs the others, exits non-zero
    naming the failed task, and resumes without redoing finished tasks."""
    from experiments.odd_classes import write

    root, task, args = setup
    folder = tmp_path / "suite"
    write(folder)
    model_args = [a for i, a in enumerate(args) if a == "--model" or args[i - 1] == "--model"]
    argv = ["run", "--suite", "isp", str(folder), "--no-mitigations", "--no-probes",
            "--classifier", str(root / "clf.json"), "--limit", "20", "--no-progress",
            "--out", str(tmp_path / "out"), *model_args]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "1 task(s) failed: broken-row" in err
    suite = json.loads((tmp_path / "out" / "suite.json").read_text())
    rows = {r["task"]: r for r in suite["tasks"]}
    assert suite["failed"] == ["broken-row"]
    assert "broken-row.jsonl, line 2" in rows["broken-row"]["error"]
    assert "\n" not in rows["broken-row"]["error"]
    assert all(not r.get("error") for n, r in rows.items() if n != "broken-row")
    assert len(rows) == 6 and "failed" in (tmp_path / "out" / "index.html").read_text()
    # byte-level tokenizer: every odd class is one or more tokens, nothing skipped
    assert all(r["n_unscorable"] == [0, 0] for n, r in rows.items() if n != "broken-row")
    done = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("records/*/*.npz")}
    assert cli.main(argv) == 1
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())


def test_the_verdict_reads_the_numbers_the_report_shows(setup):
    """One capture per model feeds both: the classifier's features equal what the score
    tables and probes.json (the report's plots) show."""
    root, _, _ = setup
    a = root / "a"
    if not (a / "classification.json").is_file():
        pytest.skip("needs the first test's run")
    feats = json.loads((a / "classification.json").read_text())["features"]
    score = json.loads((a / "score" / "summary.json").read_text())
    probes = json.loads((a / "probes" / "probes.json").read_text())
    largest = score["models"][-1]
    assert feats["acc_large"] == pytest.approx(largest["accuracy"])
    assert feats["acc_small"] == pytest.approx(score["models"][0]["accuracy"])
    prior = json.loads((a / "score" / "views" / "prior" / "summary.json").read_text())
    # the prior view carries its own answer here (the memorised ending)
    assert feats["prior_acc_large"] == pytest.approx(1 - prior["models"][-1]["accuracy"])
    big = probes["models"][-1]
    assert big["id"] == largest["id"]
    know_gap = max(v for v in big["probe_accuracy"] if v is not None) - big["output_accuracy"]
    assert feats["know_gap_large"] == pytest.approx(know_gap)
    timing = json.loads((a / "timing.json").read_text())
    for rec in timing["models"].values():  # one pass: the capture runs the distinct inputs
        assert 0 < rec["forward_tokens"] <= 1.25 * rec["distinct_tokens"]
