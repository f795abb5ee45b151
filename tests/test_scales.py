"""Multi-scale, flipped evaluation reduced to one class vector."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import graphconv
from graphconv.cli import main
from graphconv.dense import crop_loop
from graphconv.errors import GraphconvError
from graphconv.scales import multiscale, resize_bilinear, scaled_size
from conftest import SPECS, random_input
from graphconv.torch_bridge import torch


@pytest.fixture(scope="module")
def lenet():
    return graphconv.load(SPECS / "lenet.yaml"), graphconv.compile_model(SPECS / "lenet.yaml")


def test_mean_over_positions_equals_mean_of_crop_loop(lenet, rng):
    classifier, fcn = lenet
    image = random_input(rng, (2, 1, 40, 52))
    result = multiscale(fcn, image, [40], reduce="mean")
    expected = crop_loop(classifier, image, 4).mean(axis=(2, 3))
    np.testing.assert_allclose(result.scores, expected, rtol=1e-4, atol=1e-6)
    result = multiscale(fcn, image, [40], reduce="max")
    np.testing.assert_allclose(result.scores, crop_loop(classifier, image, 4).max(axis=(2, 3)), rtol=1e-4, atol=1e-6)


def test_flips_are_evaluated_explicitly(lenet, rng):
    classifier, fcn = lenet
    image = random_input(rng, (1, 1, 36, 44))
    result = multiscale(fcn, image, [36, 44], flip=True)
    assert set(result.maps) == {(36, False), (36, True), (44, False), (44, True)}
    mirrored = np.ascontiguousarray(image[..., ::-1])
    np.testing.assert_allclose(result.maps[(36, True)], crop_loop(classifier, mirrored, 4), rtol=1e-4, atol=1e-6)
    mean = np.mean([m.mean(axis=(2, 3)) for m in result.maps.values()], axis=0)
    np.testing.assert_allclose(result.scores, mean, rtol=1e-5)


def test_scale_resizes_the_shorter_side(lenet, rng):
    _, fcn = lenet
    assert scaled_size(300, 400, 384) == (384, 512)
    assert scaled_size(400, 300, 384) == (512, 384)
    assert scaled_size(300, 428, 224) == (224, 319)  # cut, as torchvision does: rounded, 320
    result = multiscale(fcn, random_input(rng, (1, 1, 40, 60)), [48])
    assert result.maps[(48, False)].shape == (1, 10, 5, 11)  # 48x72 image
    with pytest.raises(GraphconvError, match="smaller than the 32x32 crop"):
        multiscale(fcn, random_input(rng, (1, 1, 40, 60)), [20])


def test_one_scale_may_be_given_as_a_number(lenet, rng):
    _, fcn = lenet
    image = (rng.random((40, 60, 1)) * 255).astype(np.uint8)
    assert fcn.classify(image, scales=48, top=3) == fcn.classify(image, scales=[48], top=3)
    assert fcn.classify(image, scales=[], top=3) == fcn.classify(image, top=3)  # the default, as it always was
    for bad in (0, [48, -1], "48", 48.0, True):
        with pytest.raises(GraphconvError, match=r"scales must be whole numbers >= 1 \(each a shorter side"):
            fcn.classify(image, scales=bad)


@pytest.mark.skipif(torch is None, reason="torch not installed")
@pytest.mark.parametrize("size", [(30, 41), (9, 12), (17, 23), (5, 30)])
def test_resize_is_torchvision_s_antialiased_bilinear(rng, size):
    """--scales resized without antialiasing: on a photo shrunk 5x, 0.033 in probability
    from torchvision's Resize (antialias on), the usual training pipeline."""
    x = random_input(rng, (2, 3, 17, 23))
    import torch.nn.functional as F
    want = F.interpolate(torch.from_numpy(x), size=size, mode="bilinear", align_corners=False, antialias=True).numpy()
    np.testing.assert_allclose(resize_bilinear(x, *size), want, rtol=1e-4, atol=1e-4)


def test_scales_and_resize_to_one_size_give_the_same_scores(tmp_path):
    """--scales used a numpy bilinear, --resize Pillow's 8-bit one: 0.042 apart in
    probability on a 1200x1600 photo. One resize now serves both."""
    Image = pytest.importorskip("PIL.Image")
    pixels = (np.random.default_rng(2).random((150, 200)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    assert main(["compile", str(SPECS / "lenet.yaml"), "-o", str(tmp_path / "m")]) == 0
    for name, extra in (("r", ["--resize", "40", "53"]), ("s", ["--scales", "40"])):
        assert main(["run", str(tmp_path / "m"), "--image", str(tmp_path / "photo.png"), "--output",
                     str(tmp_path / f"{name}.npy"), *extra]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "r.npy").mean(axis=(2, 3)), np.load(tmp_path / "s.npy"),
                               rtol=1e-5, atol=1e-6)


def test_cli_multiscale_prints_top_classes_and_saves_the_vector(tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"digit {i}" for i in range(10)))
    spec = (SPECS / "lenet.yaml").read_text().replace("layers:", "labels: labels.txt\nlayers:")
    (tmp_path / "net.yaml").write_text(spec)
    assert main(["compile", str(tmp_path / "net.yaml"), "-o", str(tmp_path / "m")]) == 0
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((2, 1, 40, 40)).astype(np.float32))
    assert main(["run", str(tmp_path / "m"), "--input", str(tmp_path / "x.npy"), "--scales", "32,40",
                 "--flip", "--top", "3", "--output", str(tmp_path / "v.npy")]) == 0
    out = capsys.readouterr().out
    assert "scale 40 flipped" in out and "image 1: digit" in out
    assert np.load(tmp_path / "v.npy").shape == (2, 10)
    assert main(["inspect", str(tmp_path / "m"), "--scales", "32,64"]) == 0
    assert "64x64" in capsys.readouterr().out
    assert main(["run", str(tmp_path / "net.yaml"), "--input", str(tmp_path / "x.npy"), "--scales", "32"]) == 2
    assert capsys.readouterr().err == ("graphconv: net.yaml: --scales slides the network "
                                       "over the image at each scale: compile the model first (graphconv compile), "
                                       "a classifier with fc layers sees one crop\n")


def torchvision_resized_size(height: int, width: int, size: int) -> tuple[int, int]:
    """torchvision.transforms.functional._compute_resized_output_size for an int size
    (no max_size), as torchvision 0.2x writes it."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


@given(st.integers(1, 20000), st.integers(1, 20000), st.integers(1, 4096))
def test_the_scaled_size_is_torchvision_s_resize(height, width, side):
    """--resize S and --scales S give the map of the picture the model was trained on."""
    assert scaled_size(height, width, side) == torchvision_resized_size(height, width, side)
