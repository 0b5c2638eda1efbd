"""The command line (`python -m kd_lessons ...`): argument handling that needs no training."""
import pytest

from kd_lessons.__main__ import build_parser, main


def test_prepare_class_defaults_to_mnist_and_takes_several_datasets():
    assert build_parser().parse_args(["prepare-class"]).datasets == []  # main() reads [] as ["mnist"]
    args = build_parser().parse_args(["prepare-class", "mnist", "fashion_mnist", "--width", "30"])
    assert args.datasets == ["mnist", "fashion_mnist"] and args.width == 30


def test_prepare_class_refuses_a_dataset_without_a_heatmap(capsys):
    assert main(["prepare-class", "cifar10"]) == 2
    assert "no heatmap for ['cifar10']; use mnist and/or fashion_mnist" in capsys.readouterr().err


def test_teacher_command_names_the_architectures_in_its_help(capsys):
    with pytest.raises(SystemExit, match="^0$"):
        main(["teacher", "--help"])
    assert "cnn, mlp or ensemble" in capsys.readouterr().out


def test_notebooks_command_copies_and_then_refuses_to_overwrite_edits(tmp_path, capsys):
    from kd_lessons import course

    assert main(["notebooks", str(tmp_path)]) == 0
    assert f"The lessons are in {tmp_path}" in capsys.readouterr().out
    first = tmp_path / course.lessons()[0].name
    first.write_text(first.read_text(encoding="utf-8") + " ", encoding="utf-8")
    assert main(["notebooks", str(tmp_path)]) == 1
    assert f"edited copies of {first.name}" in capsys.readouterr().err
    assert main(["notebooks", str(tmp_path), "--force"]) == 0
    assert f"overwritten (1): {first.name}" in capsys.readouterr().out


def test_app_command_runs_the_packaged_script_with_streamlit_arguments(monkeypatch, capsys):
    import os
    import subprocess
    import sys

    from kd_lessons import course

    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    monkeypatch.setattr(os, "execv", lambda exe, cmd: calls.append(cmd))  # POSIX: the process becomes Streamlit
    assert main(["app", "--server.port", "8599"]) == 0
    assert calls[0] == [sys.executable, "-m", "streamlit", "run", str(course.app_script()), "--server.port", "8599"]


def test_data_command_exit_code_follows_the_core_dataset(monkeypatch, capsys):
    from kd_lessons import data
    from kd_lessons.generative import text

    def report(ok: dict):
        return lambda names, progress, offline: {name: {"ok": good, "source": "here", "train": 1, "test": 1,
                                                        "error": None if good else "gone"} for name, good in ok.items()}

    monkeypatch.setattr(text, "prepare_text", lambda names, offline: {})
    monkeypatch.setattr(data, "prepare_all", report({"mnist": True, "cifar10": False}))
    assert main(["data", "--only", "mnist", "cifar10", "--quiet"]) == 0  # MNIST, the core lessons' dataset, is ready
    monkeypatch.setattr(data, "prepare_all", report({"mnist": False, "cifar10": True}))
    assert main(["data", "--only", "mnist", "cifar10", "--quiet"]) == 1
    monkeypatch.setattr(data, "prepare_all", report({"cifar10": False}))
    assert main(["data", "--only", "cifar10", "--quiet"]) == 1  # no core dataset asked for: any failure fails
    assert "[failed] cifar10" in capsys.readouterr().out
