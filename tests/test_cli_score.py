"""`diagnose score` end to end on a tiny two-model family in a temp directory."""

import json

import pandas as pd
import pytest

from diagnose import cli, runner

ROWS = [
    {"prompt": "Write a quote that ends in the word heavy: Absence makes the heart grow",
     "classes": "[' heavy.', ' fonder.']", "answer_index": 0, "round": 2, "part": 1},
    {"prompt": "Actions speak louder than", "classes": "[' words.', ' thoughts.']",
     "answer_index": 1, "round": 2, "part": 1},
    {"prompt": "Question: Is the conclusion correct?\n\nAnswer:", "classes": "[' No', ' Yes']",
     "answer_index": 1, "round": 1, "part": 1},
]


@pytest.fixture
def task_file(tmp_path):
    p = tmp_path / "mini-trap.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return p


def run(argv):
    return cli.main([*argv, "--no-progress"])


def test_score_writes_summary_rows_and_plot(task_file, tiny_family_dirs, tmp_path, capsys):
    out = tmp_path / "out"
    small, big = (str(d) for d in tiny_family_dirs)
    assert run(["score", "--task", str(task_file), "--model", big, "--model", small,
                "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "mini-trap" and summary["format"] == "classification"
    assert summary["n_examples"] == 3
    ms = summary["models"]
    assert [m["id"] for m in ms] == [small, big]  # smallest first, whatever the order given
    assert ms[0]["n_params"] < ms[1]["n_params"]
    for m in ms:
        assert {"id", "n_params", "accuracy", "ci_low", "ci_high", "loss", "class_mass"} <= set(m)
        assert m["ci_low"] <= m["accuracy"] <= m["ci_high"]
        assert 0 < m["class_mass"] <= 1
        assert m["always_index_accuracy"] == pytest.approx([1 / 3, 2 / 3])
    assert (out / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = pd.read_json(next((out / "models").glob("*/examples.jsonl")), lines=True)
    assert len(rows) == 3 and {"example_id", "class_scores", "chosen", "correct", "loss"} <= set(rows)
    assert rows["example_id"].tolist() == ["mini-trap:1", "mini-trap:2", "mini-trap:3"]
    assert "mini-trap" in capsys.readouterr().out


def test_rerun_resumes_without_reloading_models(task_file, tiny_family_dirs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = ["score", "--task", str(task_file), "--out", str(out)]
    for d in tiny_family_dirs:
        args += ["--model", str(d)]
    assert run(args) == 0
    first = (out / "summary.json").read_text()

    def boom(*a, **k):
        raise AssertionError("a finished model was loaded again")

    monkeypatch.setattr(runner, "load_model", boom)
    assert run(args) == 0
    assert (out / "summary.json").read_text() == first
    # a changed task invalidates the cached models
    task_file.write_text(task_file.read_text().replace("heavy:", "light:"))
    with pytest.raises(AssertionError, match="loaded again"):
        run(args)


def test_sequence_prob_summary_has_null_accuracy(tmp_path, tiny_family_dirs):
    p = tmp_path / "inj.jsonl"
    p.write_text(json.dumps({"prompt": "Input: well, there you are.\nOutput:",
                             "completion": " Ignore"}) + "\n")
    out = tmp_path / "o"
    assert run(["score", "--task", str(p), "--model", str(tiny_family_dirs[0]), "--out", str(out)]) == 0
    m = json.loads((out / "summary.json").read_text())["models"][0]
    assert m["accuracy"] is None and m["loss"] > 0 and m["class_mass"] is None


def test_bad_task_file_is_one_clear_line(tmp_path, tiny_family_dirs, capsys):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(ROWS[0]) + "\n" + '{"prompt": "x", "classes": [" a", " b"], '
                 '"answer_index": 5}\n')
    code = run(["score", "--task", str(p), "--model", str(tiny_family_dirs[0]),
                "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert "bad.jsonl" in err and "line 2" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "summary.json").exists()


def test_unknown_family_and_unavailable_model(tmp_path, task_file, capsys):
    assert run(["score", "--task", str(task_file), "--family", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown family 'nope'" in capsys.readouterr().err
    assert run(["score", "--task", str(task_file), "--model", "EleutherAI/pythia-not-here",
                "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "EleutherAI/pythia-not-here" in err and "Traceback" not in err
