"""``python -m stages predict``: the trained model on image files and on test-set images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from testing.synthetic import synthetic_digits
from tests.test_preprocess import blank_png, nan_tiff, two_page_tiff


def write_photo(path, image: np.ndarray, invert: bool = False) -> None:
    """A synthetic digit as a user's photo might be: 100x80, off centre, maybe dark on light."""
    canvas = Image.new("L", (100, 80))
    canvas.paste(Image.fromarray(image).resize((56, 56), Image.Resampling.BILINEAR), (38, 10))
    Image.fromarray(255 - np.asarray(canvas) if invert else np.asarray(canvas)).save(path)


def test_image_files_and_test_images_are_classified(reproduced, tmp_path):
    images, labels = synthetic_digits(10, seed=7)
    files = []
    for index, (image, label) in enumerate(zip(images.numpy(), labels.tolist(), strict=True)):
        files.append((tmp_path / f"digit{index}.{'jpg' if index % 2 else 'png'}", label))
        write_photo(files[-1][0], image, invert=index % 3 == 0)
    result = reproduced.stage("predict", *(str(path) for path, _ in files), "--index", "2", "--json")
    predictions = json.loads(result.stdout)
    assert [p["digit"] for p in predictions[:-1]] == [label for _, label in files]
    test_image = predictions[-1]
    assert test_image["input"] == "test[2]" and test_image["digit"] == test_image["label"]
    assert [len(p["top"]) for p in predictions] == [3] * 11
    assert all(p["top"][0]["probability"] >= p["top"][1]["probability"] for p in predictions)


def test_a_test_image_prints_its_prediction_truth_and_top_three(reproduced, in_process):
    code, out, _ = in_process(reproduced, "predict", "--index", "2")
    assert code == 0 and out.startswith("test[2]: ") and "(true " in out and out.count("%") == 3


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["missing.png"], "missing.png not found"),
        (["params.yaml"], "params.yaml is not an image"),
        (["stages"], "stages is a directory: give image files"),
        (["/dev/null"], "/dev/null is not a regular file but a character device: give image files"),
        (["--index", "200"], "--index 200 is out of range"),
        (["--index", "-1"], "--index -1 is out of range"),
        (["--index", "0", "--model", "models/none.pt"], "models/none.pt not found: train a model first"),
        (["--index", "0", "--max-pixels", "0"], "--max-pixels 0 is invalid: give a number of pixels >= 1"),
    ],
)
def test_a_bad_input_or_no_model_is_one_line_naming_it(reproduced, args, named, in_process):
    code, out, err = in_process(reproduced, "predict", *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and named in err
    assert err.count("\n") == 1


def test_an_image_over_max_pixels_is_one_line_naming_its_pixels_and_the_limit(reproduced, tmp_path, in_process):
    bomb, photo = tmp_path / "bomb.png", tmp_path / "photo.png"
    bomb.write_bytes(blank_png(20_000, 20_000))
    write_photo(photo, synthetic_digits(1, seed=7)[0][0].numpy())  # 100x80
    for args, named in [
        ([bomb], f"{bomb} is 20000x20000 = 400,000,000 pixels, more than the limit of 89,478,485"),
        ([photo, "--max-pixels", "7999"], f"{photo} is 100x80 = 8,000 pixels, more than the limit of 7,999"),
    ]:
        assert in_process(reproduced, "predict", *map(str, args)) == (2, "", f"error: {named}\n")


def test_a_damaged_image_a_nan_pixel_or_an_endless_model_file_is_one_line(reproduced, tmp_path, in_process):
    damaged, nan, endless = tmp_path / "damaged.tif", tmp_path / "nan.tif", tmp_path / "model.pt"
    damaged.write_bytes(two_page_tiff())
    nan.write_bytes(nan_tiff())
    endless.symlink_to("/dev/zero")
    for args, named in [
        ([damaged], f"{damaged} is not an image that can be read (PNG, JPEG, GIF, WebP, BMP or TIFF)"),
        ([nan], f"{nan} has pixels that are not numbers (NaN or infinite): no shade to give them"),
        (["--index", "0", "--model", endless], f"{endless} is over 67,108,864 bytes, so not a model saved by"),
    ]:
        code, out, err = in_process(reproduced, "predict", *map(str, args))
        assert (code, out, err.count("\n")) == (2, "", 1) and err.startswith(f"error: {named}")


def test_pillows_warnings_about_a_damaged_file_do_not_come_before_its_one_line(reproduced, tmp_path):
    """Pillow warns of the tag it skips, then the page after it fails: one line still, as a user runs it."""
    damaged = tmp_path / "damaged.tif"
    damaged.write_bytes(two_page_tiff(warned=True))
    result = reproduced.stage("predict", str(damaged), check=False)
    assert (result.returncode, result.stderr) == (
        2,
        f"error: {damaged} is not an image that can be read (PNG, JPEG, GIF, WebP, BMP or TIFF)\n",
    )


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"arch": "mlp_20_sigmoid"}, "holds architecture 'mlp_128_64_relu', but params.yaml asks for 'mlp_20_sigmoid'"),
        ({"optimizer": "adam"}, "models/model.pt was trained with other params than params.yaml's"),
    ],
    ids=["another-architecture", "other-params"],
)
def test_predict_refuses_a_model_that_params_yaml_no_longer_describes(project, params, named, in_process):
    """As after a failed ``dvc exp run -S arch=...``: params.yaml changed, the last good model kept."""
    project.set_params(**params)
    code, out, err = in_process(project, "predict", "--index", "0")
    assert code == 2 and out == ""
    assert named in err and err.count("\n") == 1
