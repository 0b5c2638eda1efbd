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
