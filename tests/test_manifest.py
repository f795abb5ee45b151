"""graphconv-maps.csv: what an --images batch did to each image, for the user's scripts,
and the record by which a later batch replaces graphconv's own .npy maps of another
shape (a photo cropped since, another --classes) but never a user's file."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from conftest import SPECS, graphconv_in_process

Image = pytest.importorskip("PIL.Image")
graphconv = graphconv_in_process


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("m") / "lenet-fcn"
    assert graphconv("compile", SPECS / "lenet.yaml", "-o", folder).returncode == 0
    return folder


def photos(folder, sizes: dict[str, tuple[int, int]]):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (height, width) in sizes.items():
        Image.fromarray((rng.random((height, width)) * 255).astype(np.uint8)).save(folder / name)
    return folder


def rows(out) -> dict[str, dict[str, str]]:
    with open(out / "graphconv-maps.csv", newline="", encoding="utf-8") as file:
        return {row["map"]: row for row in csv.DictReader(file)}


def test_each_image_has_a_row_saying_what_became_of_it(model_dir, tmp_path):
    folder = photos(tmp_path / "photos", {"a.png": (40, 50), "b.png": (40, 40)})
    (folder / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    out = tmp_path / "maps"
    result = graphconv("run", model_dir, "--images", folder, "--output-dir", out)
    assert result.returncode == 2 and "c.png" in result.stderr
    listed = rows(out)
    assert sorted(listed) == ["a.npy", "b.npy", "c.npy"]
    assert listed["a.npy"]["status"] == "written" and listed["a.npy"]["shape"] == "x".join(
        map(str, np.load(out / "a.npy").shape))
    assert listed["a.npy"]["image"] == str(folder / "a.png")
    assert listed["c.npy"]["status"] == "failed" and listed["c.npy"]["error"] and not (out / "c.npy").exists()


def test_a_rerun_replaces_graphconv_s_own_map_of_another_shape_and_lists_each_map_once(model_dir, tmp_path):
    """A photo cropped since, with --skip-existing: its map (its size now another) was
    refused as perhaps a user's file, and with it the whole batch."""
    folder = photos(tmp_path / "photos", {"a.png": (40, 50), "b.png": (40, 40)})
    out = tmp_path / "maps"
    assert graphconv("run", model_dir, "--images", folder, "--output-dir", out).returncode == 0
    before = np.load(out / "a.npy").shape
    Image.open(folder / "a.png").crop((0, 0, 36, 36)).save(folder / "a.png")  # edited after its map
    result = graphconv("run", model_dir, "--images", folder, "--output-dir", out, "--skip-existing")
    assert result.returncode == 0, result.stderr
    assert "1 of 2 image(s) have their map" in result.stderr
    assert np.load(out / "a.npy").shape[2:] == (2, 2) != before[2:]  # lenet: crop 32, stride 4
    text = (out / "graphconv-maps.csv").read_text()
    assert text.count("a.npy") == 1 and text.count("b.npy") == 1  # the list written again, one row each


def test_an_npy_graphconv_did_not_write_is_still_refused(model_dir, tmp_path):
    """One not in the list (or changed since it was listed) may be the user's own."""
    folder = photos(tmp_path / "photos", {"a.png": (40, 50)})
    out = tmp_path / "maps"
    assert graphconv("run", model_dir, "--images", folder, "--output-dir", out).returncode == 0
    np.save(out / "a.npy", np.zeros((1, 3, 8, 8), np.float32))  # the user's, in its place
    result = graphconv("run", model_dir, "--images", folder, "--output-dir", out)
    assert result.returncode == 2 and "is already there and holds float32 (1, 3, 8, 8)" in result.stderr
    assert np.load(out / "a.npy").shape == (1, 3, 8, 8)


def test_a_file_of_the_list_s_name_that_is_not_graphconv_s_is_refused_before_any_work(model_dir, tmp_path):
    folder = photos(tmp_path / "photos", {"a.png": (40, 50)})
    out = tmp_path / "maps"
    out.mkdir()
    (out / "graphconv-maps.csv").write_text("name,score\nmine,1\n")
    result = graphconv("run", model_dir, "--images", folder, "--output-dir", out)
    assert result.returncode == 2 and "is already there and is not graphconv's list of maps" in result.stderr
    assert result.stderr.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == ["graphconv-maps.csv"]
    assert (out / "graphconv-maps.csv").read_text() == "name,score\nmine,1\n"


def test_a_batch_of_which_no_image_was_mapped_leaves_no_folder_and_no_list(model_dir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    result = graphconv("run", model_dir, "--images", folder, "--output-dir", tmp_path / "maps")
    assert result.returncode == 2 and not (tmp_path / "maps").exists()
