"""kd_lessons.diffusion.data: the 2-D distributions of lesson 17, seeded and scaled."""
import pytest
import torch

from kd_lessons.diffusion.data import DATASETS, sample_data


@pytest.mark.parametrize("name", list(DATASETS))
def test_seeded_unit_scale_points(name):
    a = sample_data(name, 5000, torch.Generator().manual_seed(1))
    b = sample_data(name, 5000, torch.Generator().manual_seed(1))
    c = sample_data(name, 5000, torch.Generator().manual_seed(2))
    assert a.shape == (5000, 2) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert ((a.std(0) - 1).abs() < 0.1).all() and (a.mean(0).abs() < 0.35).all()


def test_eight_gaussians_has_eight_tight_modes():
    x = sample_data("8gaussians", 4000, torch.Generator().manual_seed(0))
    radius = x.norm(dim=1)
    assert ((radius - 2 / 1.42).abs() < 0.4).float().mean() > 0.99   # on the circle, none in the middle
    angle = torch.atan2(x[:, 1], x[:, 0])
    sector = torch.round(angle / (torch.pi / 4)).long() % 8
    counts = torch.bincount(sector, minlength=8)
    assert (counts > 400).all()                                       # 500 expected per mode


def test_checkerboard_leaves_the_white_squares_empty():
    x = sample_data("checkerboard", 4000, torch.Generator().manual_seed(0)) * 1.15
    col, row = torch.floor(x[:, 0] + 2), torch.floor(x[:, 1] + 2)
    assert ((col + row) % 2 == 0).all()


@pytest.mark.parametrize("name, n, match", [("moons", 10, "not known"), ("8gaussians", 0, "positive whole"),
                                            ("8gaussians", 2.5, "positive whole"), ("8gaussians", True, "positive")])
def test_bad_input_says_what_to_do(name, n, match):
    with pytest.raises(ValueError, match=match):
        sample_data(name, n)
