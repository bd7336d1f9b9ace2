"""Bringing an image of any size and polarity to MNIST's form: 20x20 box, centred by mass, white ink."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from stages.core.preprocess import centre_of_mass, to_mnist
from stages.core.synthetic import draw_digit


def photograph(digit: np.ndarray, size: tuple[int, int] = (100, 120), at: tuple[int, int] = (5, 30)) -> np.ndarray:
    """``digit`` scaled 3x (bilinear) onto a black canvas of ``size`` (width, height), off centre."""
    canvas = Image.new("L", size)
    canvas.paste(Image.fromarray(digit).resize((84, 84), Image.Resampling.BILINEAR), at)
    return np.asarray(canvas)


def ink_box(image: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(image > 64)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


@pytest.mark.parametrize("label", range(10))
def test_a_rescaled_off_centre_digit_comes_back_to_mnist_form(label):
    digit = draw_digit(label).numpy()
    result = to_mnist(photograph(digit))
    assert result.shape == (28, 28) and result.dtype == np.uint8
    assert np.abs(result.astype(int) - digit).mean() < 20


def test_dark_ink_on_light_paper_is_inverted_to_white_on_black():
    photo = photograph(draw_digit(8).numpy())
    assert np.array_equal(to_mnist(255 - photo), to_mnist(photo))
    assert to_mnist(255 - photo)[0, 0] == 0


@pytest.mark.parametrize(("height", "width"), [(200, 30), (30, 200), (50, 50)])
def test_the_inks_bounding_box_is_fitted_into_20x20_keeping_its_aspect_ratio(height, width):
    photo = np.full((300, 300), 230, dtype=np.uint8)  # light paper
    photo[40 : 40 + height, 60 : 60 + width] = 20
    box = ink_box(to_mnist(photo))
    assert max(box) == 20
    assert box[0] / box[1] == pytest.approx(height / width, rel=0.2)


def test_the_centre_of_mass_lands_at_the_centre_of_the_field():
    photo = np.zeros((90, 140), dtype=np.uint8)
    photo[5:60, 100:130] = 255  # a block in a corner
    photo[5:15, 70:100] = 255  # and a flag, so the mass is not the box's middle
    row, col = centre_of_mass(to_mnist(photo))
    # Index coordinates: pixel i spans [i, i + 1], so the field's centre 14, 14 is index 13.5.
    assert abs(row + 0.5 - 14) <= 0.5 and abs(col + 0.5 - 14) <= 0.5


def test_an_image_without_ink_is_refused():
    with pytest.raises(ValueError, match="no digit"):
        to_mnist(np.full((50, 50), 200, dtype=np.uint8))
