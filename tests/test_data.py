"""IDX decoding and the seeded split: the test set stays apart, validation is disjoint and traceable."""

from __future__ import annotations

import io

import pytest
import torch

from stages.core import data
from stages.core.errors import PipelineError
from stages.core.idx import decode_idx, encode_idx
from testing.synthetic import synthetic_digits

NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, NO_CUDA])]


def test_idx_round_trip_keeps_shape_and_bytes():
    images, labels = synthetic_digits(30, seed=0)
    assert torch.equal(decode_idx(encode_idx(images)), images)
    assert torch.equal(decode_idx(encode_idx(labels)), labels)


def test_idx_header_is_big_endian_as_in_mnist():
    encoded = encode_idx(torch.zeros(2, 28, 28, dtype=torch.uint8))
    assert encoded[:16].hex() == "00000803" + "00000002" + "0000001c" + "0000001c"


@pytest.mark.parametrize(
    "corrupt,message",
    [
        (lambda b: b[:-1], "needs"),
        (lambda b: b + b"\0", "needs"),
        (lambda b: b"\x00\x00\x0d\x03" + b[4:], "not an unsigned-byte IDX"),
        (lambda b: b[:2], "too short"),
    ],
)
def test_corrupt_idx_is_a_clear_error(corrupt, message):
    with pytest.raises(PipelineError, match=message):
        decode_idx(corrupt(encode_idx(torch.zeros(3, 4, 4, dtype=torch.uint8))), "file")


def full_set(count: int = 100) -> data.Subset:
    images, labels = synthetic_digits(count, seed=0)
    return data.Subset(images, labels.long(), torch.arange(count))


def test_split_is_disjoint_sized_and_traceable_to_the_source():
    full = full_set()
    train, valid = data.split_train_valid(full, train_size=70, valid_size=20, seed=1)
    assert (len(train), len(valid)) == (70, 20)
    assert not set(train.source_indices.tolist()) & set(valid.source_indices.tolist())
    for subset in (train, valid):
        assert torch.equal(subset.images, full.images[subset.source_indices])
        assert torch.equal(subset.labels, full.labels[subset.source_indices])


def test_split_depends_on_the_seed_alone():
    first = data.split_train_valid(full_set(), 70, 20, seed=1)[1].source_indices
    assert torch.equal(first, data.split_train_valid(full_set(), 70, 20, seed=1)[1].source_indices)
    assert not torch.equal(first, data.split_train_valid(full_set(), 70, 20, seed=2)[1].source_indices)


def test_split_larger_than_the_data_names_the_sizes():
    with pytest.raises(PipelineError, match=r"70 \+ 40 = 110 exceeds the 100 training images"):
        data.split_train_valid(full_set(), 70, 40, seed=1)


def test_saved_subset_loads_back_and_bytes_are_reproducible(tmp_path):
    subset = full_set(10)
    (tmp_path / "a.pt").write_bytes(data.subset_bytes(subset))
    assert data.subset_bytes(subset) == (tmp_path / "a.pt").read_bytes()
    loaded = data.load_subset(tmp_path / "a.pt")
    assert torch.equal(loaded.images, subset.images) and torch.equal(loaded.labels, subset.labels)


def test_missing_split_says_which_stage_to_run(tmp_path):
    with pytest.raises(PipelineError, match="run the split stage"):
        data.load_subset(tmp_path / "train.pt")


def saved(images: torch.Tensor, labels: torch.Tensor) -> bytes:
    """What the split stage writes for these images and labels."""
    return torch_bytes({"images": images, "labels": labels, "source_indices": torch.arange(len(images))})


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


IMAGES = torch.zeros(3, 28, 28, dtype=torch.uint8)
DAMAGE = {  # what is written in place of a split file, and what the error says of it
    "truncated": (saved(IMAGES, torch.tensor([0, 1, 2]))[:-100], "is not a saved subset"),
    "not-torch": (b"<html>503 Service Unavailable</html>", "is not a saved subset"),
    "empty": (b"", "is not a saved subset"),
    "directory": (None, "is not a saved subset"),
    "a-bare-tensor": (torch_bytes(IMAGES), "not a saved subset (a dict of tensors images, labels, source_indices)"),
    "label-10": (saved(IMAGES, torch.tensor([0, 1, 10])), "label 10 is not a digit 0-9"),
    "label-minus-1": (saved(IMAGES, torch.tensor([0, -1, 2])), "label -1 is not a digit 0-9"),
    "float-labels": (saved(IMAGES, torch.tensor([0.0, 1.0, 2.0])), "labels are torch.float32, not int64"),
    "fewer-labels": (saved(IMAGES, torch.tensor([0, 1])), "3 images, but labels [2]"),
    "not-28x28": (saved(IMAGES[:, :27], torch.tensor([0, 1, 2])), "images are torch.uint8 [3, 27, 28]"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_split_file_is_one_line_naming_it_and_the_stage_to_rerun(tmp_path, damage):
    content, named = DAMAGE[damage]
    path = tmp_path / "train.pt"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(PipelineError) as error:
        data.load_subset(path)
    message = str(error.value)
    assert message.startswith(str(path)) and named in message
    assert message.endswith("run dvc repro split") and "\n" not in message


def test_a_stage_given_a_damaged_split_exits_2_with_one_line(reproduced, tmp_path, in_process):
    (tmp_path / "train.pt").write_bytes(b"")
    code, _, err = in_process(reproduced, "train", "--split", str(tmp_path), "--checkpoint", str(tmp_path / "c.pt"))
    assert code == 2
    named = f"{tmp_path / 'train.pt'} is not a saved subset (truncated, corrupt or not a file)"
    assert err == f"error: {named}: run dvc repro split\n"


@pytest.mark.parametrize("device", DEVICES)
def test_features_scale_like_torchvision_to_tensor(device):
    """Every pixel value, bitwise as ``ToTensor`` gives it on the CPU, whichever device scales."""
    from torchvision.transforms.functional import to_tensor

    images = (torch.arange(2 * 28 * 28) % 256).to(torch.uint8).reshape(2, 28, 28)
    expected = torch.stack([to_tensor(image.numpy()).reshape(-1) for image in images])
    assert torch.equal(data.as_features(images, torch.device(device)).cpu(), expected)
