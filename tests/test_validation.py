"""Bad input gets one clear line naming the file (or flag) and the field, exit code 2, nothing written."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.core.errors import UserError
from harness.suites.spec import SUITES_DIR, load_suite

ROOT = Path(__file__).resolve().parent.parent
SENTIMENT = yaml.safe_load((SUITES_DIR / "sentiment.yaml").read_text())


def write_suite(tmp_path, mutate):
    data = yaml.safe_load((SUITES_DIR / "sentiment.yaml").read_text())
    mutate(data)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _set(path, value):
    def f(d):
        *head, last = path.split(".")
        for k in head:
            d = d[k]
        d[last] = value
    return f


def _del(path):
    def f(d):
        *head, last = path.split(".")
        for k in head:
            d = d[k]
        del d[last]
    return f


SUITE_CASES = [
    (_set("tokenizer.vocab_sise", 100), "tokenizer.vocab_sise", "did you mean 'vocab_size'"),
    (_set("colour", "red"), "colour", "unknown key"),
    (_set("policy.max_length", "long"), "policy.max_length", "expected an integer"),
    (_set("reference.lr", -1.0), "reference.lr", "must be > 0"),
    (_set("pairs.flip_rate", 0.5), "pairs.flip_rate", "< 0.5"),
    (_set("pairs.labels", "random"), "pairs.labels", "allowed: deterministic, bradley_terry"),
    (_set("evaluation.temperature", 0), "evaluation.temperature", "must be > 0"),
    (_set("judge", "vader"), "judge", "expected a mapping"),
    (_del("name"), "name", "missing required key"),
    (_del("presets.full"), "presets", "missing preset 'full'"),
    (_set("presets.smoke.train_prompts", -5), "presets.smoke.train_prompts", "must be >= 1"),
    (_set("name", "../escape"), "name", "allowed: letters"),
    (_set("prompts.max_words", 1), "prompts.max_words", "must be >= min_words"),
    (_set("data.kind", "text_file"), "data.path", "required when data.kind is text_file"),
]


@pytest.mark.parametrize("mutate,key,message", SUITE_CASES, ids=[c[1] for c in SUITE_CASES])
def test_malformed_suite_is_one_line_naming_file_and_key(tmp_path, mutate, key, message):
    path = write_suite(tmp_path, mutate)
    with pytest.raises(UserError) as e:
        load_suite(str(path))
    line = e.value.one_line()
    assert "\n" not in line and str(path) in line and key in line and message in line, line


def test_yaml_syntax_error_names_line(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: x\nversion: 1\npresets: {smoke: [\n")
    with pytest.raises(UserError) as e:
        load_suite(str(p))
    assert str(p) in str(e.value) and "YAML syntax error" in str(e.value) and "line" in str(e.value)


def test_yaml_is_safe_loaded(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo pwned']\nversion: 1\n")
    with pytest.raises(UserError):
        load_suite(str(p))


CLI_CASES = [
    (["run", "nosuch"], "SUITE: nosuch: unknown suite"),
    (["run", "sentiment", "--algorithms", "dpo,dop"], "--algorithms: dop: unknown algorithm"),
    (["run", "sentiment", "--set", "dpo.beta=0"], "--set: dpo.beta: got 0.0, must be > 0"),
    (["run", "sentiment", "--set", "dpo.beta=-1"], "dpo.beta"),
    (["run", "sentiment", "--set", "dpo.label_smoothing=0.5"], "dpo.label_smoothing"),
    (["run", "sentiment", "--set", "dpo.epochs=-2"], "dpo.epochs"),
    (["run", "sentiment", "--set", "dpo.bta=0.5"], "did you mean 'beta'"),
    (["run", "sentiment", "--set", "dpo.beta=high"], "expected a number"),
    (["run", "sentiment", "--set", "beta=0.5"], "expected ALGORITHM.KEY=VALUE"),
    (["run", "sentiment", "--algorithms", "sft", "--set", "dpo.beta=0.5"], "not among --algorithms"),
    (["run", "sentiment", "--set", "dpo.loss=ipo", "--set", "dpo.label_smoothing=0.1"], "must be 0 with loss=ipo"),
    (["run", "sentiment", "--seeds", "0,x"], "--seeds"),
    (["run", "sentiment", "--preset", "huge"], "--preset: huge: unknown preset"),
]


@pytest.mark.parametrize("argv,message", CLI_CASES, ids=[" ".join(c[0][2:]) or c[0][1] for c in CLI_CASES])
def test_cli_rejects_bad_input_before_writing_anything(tmp_path, capsys, argv, message):
    results = tmp_path / "results"
    code = main(argv + ["--results", str(results)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and err.startswith("prefbench: error: ") and message in err, err
    assert not results.exists()


def test_cli_exit_code_and_one_line_in_a_real_process(tmp_path):
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", "sentiment", "--set", "dpo.beta=0",
                        "--results", str(tmp_path / "r")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.strip() == "prefbench: error: --set: dpo.beta: got 0.0, must be > 0"


def test_foreign_results_folder_is_refused_and_left_intact(tmp_path, capsys):
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("precious")
    assert main(["run", "sentiment", "--results", str(foreign)]) == 2
    assert "not a prefbench results folder" in capsys.readouterr().err
    assert [p.name for p in foreign.iterdir()] == ["chapter1.tex"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_read_only_results_folder_is_refused(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["run", "sentiment", "--results", str(ro / "sub")]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


def test_every_command_has_help():
    for argv in (["--help"], ["list", "--help"], ["run", "--help"], ["report", "--help"]):
        r = subprocess.run([sys.executable, "-m", "harness.cli", *argv], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 0 and "usage: prefbench" in r.stdout


def test_report_on_missing_folder_is_a_clean_error(tmp_path, capsys):
    assert main(["report", "--results", str(tmp_path / "none")]) == 2
    assert "no such results folder" in capsys.readouterr().err
