"""IDX decoding and the seeded split: the test set stays apart, validation is disjoint and traceable."""

from __future__ import annotations

import pytest
import torch

from stages.core import data
from stages.core.errors import PipelineError
from stages.core.idx import decode_idx, encode_idx
from stages.core.synthetic import synthetic_digits

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


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
    data.save_subset(subset, tmp_path / "a.pt")
    data.save_subset(subset, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    loaded = data.load_subset(tmp_path / "a.pt")
    assert torch.equal(loaded.images, subset.images) and torch.equal(loaded.labels, subset.labels)


def test_missing_split_says_which_stage_to_run(tmp_path):
    with pytest.raises(PipelineError, match="run the split stage"):
        data.load_subset(tmp_path / "train.pt")


@pytest.mark.parametrize("device", DEVICES)
def test_features_scale_like_torchvision_to_tensor(device):
    """Every pixel value, bitwise as ``ToTensor`` gives it on the CPU, whichever device scales."""
    from torchvision.transforms.functional import to_tensor

    images = (torch.arange(2 * 28 * 28) % 256).to(torch.uint8).reshape(2, 28, 28)
    expected = torch.stack([to_tensor(image.numpy()).reshape(-1) for image in images])
    assert torch.equal(data.as_features(images, torch.device(device)).cpu(), expected)
