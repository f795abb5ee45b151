"""graphconv-maps.csv: what an --images batch did to each image, for the user's scripts,
and the record by which a later batch replaces graphconv's own .npy maps of another
shape (a photo cropped since, another --classes) but never a user's file."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from conftest import SPECS, graphconv_in_process
from graphconv.manifest import Manifest

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
    folder = photos(tmp_path / "photos", {"a.png": (40, 50), "b.png": (40, 40), "d.png": (20, 20)})
    (folder / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    out = tmp_path / "maps"
    result = graphconv("run", model_dir, "--images", folder, "--output-dir", out)
    assert result.returncode == 2 and "c.png" in result.stderr and "d.png" in result.stderr
    listed = rows(out)
    assert sorted(listed) == ["a.npy", "b.npy", "c.npy", "d.npy"]
    for failed in ("c", "d"):  # the first column names the image; the error, whatever it is, does not again
        assert listed[f"{failed}.npy"]["error"] and "png" not in listed[f"{failed}.npy"]["error"], listed
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
    assert "1 of 2 images has its map" in result.stderr
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


def test_a_batch_of_which_no_image_was_mapped_keeps_the_list_saying_why(model_dir, tmp_path):
    """A shard of an array job whose every slide failed (a corrupt transfer) removed the
    folder it made, list and all: the script gathering the shards' lists found none, and
    the "0 of 1 image -> maps" line named a folder that was not there. Refusals before
    any image's work (a tile too small, a classifier as written) still leave nothing."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    result = graphconv("run", model_dir, "--images", folder, "--output-dir", tmp_path / "maps")
    assert result.returncode == 2 and "0 of 1 image -> " in result.stdout
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["graphconv-maps.csv"]
    [row] = rows(tmp_path / "maps").values()
    assert row["status"] == "failed" and row["error"] and row["image"] == str(folder / "c.png")


def test_a_file_name_that_is_not_utf8_is_listed_as_its_bytes(model_dir, tmp_path):
    """A Latin-1 'café.png' stopped the batch at its row (UnicodeEncodeError), the other
    images unmapped, and every rerun the same."""
    folder = photos(tmp_path / "photos", {"a.png": (40, 40)})
    latin = os.fsdecode(bytes(folder) + b"/caf\xe9.png")
    (folder / "a.png").rename(latin)
    photos(folder, {"b.png": (40, 40)})
    out = tmp_path / "maps"
    result = graphconv("run", model_dir, "--images", folder, "--output-dir", out)
    assert result.returncode == 0, result.stderr
    assert "2 of 2 images" in result.stdout
    assert os.fsencode(latin) in (out / "graphconv-maps.csv").read_bytes()
    assert Manifest(out).wrote(os.fsdecode(bytes(out) + b"/caf\xe9.npy"))


def test_a_map_whose_row_a_stop_cut_off_is_listed_and_counted(model_dir, tmp_path, monkeypatch):
    """Ctrl-C after a map was written and before its row: the map was kept but neither
    listed (so a later crop of the photo was refused again) nor counted."""
    from graphconv import tiled_cli

    folder = photos(tmp_path / "photos", {"a.png": (40, 40), "b.png": (40, 40)})
    out = tmp_path / "maps"
    monkeypatch.setattr(tiled_cli, "_with_heatmap", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt()))
    result = graphconv("run", model_dir, "--images", folder, "--output-dir", out)
    assert result.returncode == 130
    assert "1 of 2 maps was finished and is kept" in result.stderr
    assert rows(out)["a.npy"]["status"] == "written" and Manifest(out).wrote(str(out / "a.npy"))


def test_two_batches_into_one_folder_keep_each_other_s_rows(tmp_path):
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", np.zeros((1, 2, 3, 3), np.float32))
    first, second = Manifest(tmp_path), Manifest(tmp_path)
    first.record("/p/a.png", str(tmp_path / "a.npy"), (1, 2, 3, 3), None, True)
    second.record("/p/b.png", str(tmp_path / "b.npy"), (1, 2, 3, 3), None, True)
    second.rewrite()
    first.rewrite()
    assert sorted(rows(tmp_path)) == ["a.npy", "b.npy"]


def test_a_batch_refused_a_map_another_batch_wrote_meanwhile_keeps_that_batch_s_row(tmp_path):
    """Two cameras' img_0.png into one folder at once: the second batch's failure row
    replaced the first's 'written' row, and the .npy lost the record that graphconv wrote it."""
    camera_b = Manifest(tmp_path)  # read before the other batch wrote anything
    np.save(tmp_path / "img_0.npy", np.zeros((1, 2, 3, 3), np.float32))
    Manifest(tmp_path).record("/a/img_0.png", str(tmp_path / "img_0.npy"), (1, 2, 3, 3), None, True)
    camera_b.record("/b/img_0.png", str(tmp_path / "img_0.npy"), None, "was written by another run", False)
    camera_b.rewrite()
    assert rows(tmp_path)["img_0.npy"]["image"] == "/a/img_0.png"
    assert Manifest(tmp_path).image_of(str(tmp_path / "img_0.npy")) == "/a/img_0.png"


@pytest.mark.parametrize("their_row_first", [True, False])
def test_the_same_batch_run_twice_at_once_keeps_the_winner_s_written_rows(tmp_path, their_row_first):
    """An array task resubmitted while the first still ran: both mapped the same image,
    and the loser's "failed" row ("written by another run"), appended after the winner's
    row or before it, replaced it at the loser's final rewrite; the map on disk lost its
    record (--skip-existing then took it for any model's). A failure of this run's own,
    with no other batch's row since, is still recorded."""
    loser = Manifest(tmp_path)
    output = str(tmp_path / "img_0.npy")

    def winner():
        np.save(output, np.zeros((1, 2, 3, 3), np.float32))
        Manifest(tmp_path).record("/a/img_0.png", output, (1, 2, 3, 3), None, True, {"model": "m"})
    if their_row_first:
        winner()
    loser.record("/a/img_0.png", output, None, "was written by another run", False)
    if not their_row_first:
        winner()
    loser.rewrite()
    assert rows(tmp_path)["img_0.npy"]["status"] == "written"
    assert Manifest(tmp_path).made_with(output) == {"model": "m"}
    alone = Manifest(tmp_path)
    alone.record("/a/img_0.png", output, None, "img_0.png: cut short", False)
    alone.rewrite()
    assert rows(tmp_path)["img_0.npy"]["status"] == "failed"


def test_skip_failed_leaves_out_images_that_failed_alike_before(model_dir, tmp_path):
    """A broken photo in a folder made every nightly --skip-existing rerun exit 2. With
    --skip-failed an image whose map failed with these settings, its file unchanged, is
    left out and said; replaced, or with another setting, it is tried again."""
    folder = photos(tmp_path / "photos", {"a.png": (40, 50), "small.png": (20, 20)})
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    out = tmp_path / "maps"
    batch = ["run", model_dir, "--images", folder, "--output-dir", out, "--skip-existing"]
    first = graphconv(*batch)
    assert first.returncode == 2 and rows(out)["broken.npy"]["status"] == "failed"
    assert rows(out)["small.npy"]["status"] == "failed", "smaller than the crop"
    assert graphconv(*batch).returncode == 2, "without --skip-failed each is tried again"
    again = graphconv(*batch, "--skip-failed")
    assert again.returncode == 0, again.stderr
    assert "2 images failed in an earlier run with these settings" in again.stderr
    assert "no map to make" in again.stdout
    assert rows(out)["broken.npy"]["error"] and rows(out)["broken.npy"]["status"] == "failed", "the row keeps it"
    padded = graphconv(*batch, "--skip-failed", "--pad-image", "constant")  # another setting: tried again
    assert "2 of 3 images" in padded.stdout and rows(out)["small.npy"]["status"] == "written"
    assert padded.returncode == 2 and rows(out)["broken.npy"]["status"] == "failed"
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(folder / "broken.png")  # mended: tried again
    mended = graphconv(*batch, "--skip-failed", "--pad-image", "constant")
    assert mended.returncode == 0 and rows(out)["broken.npy"]["status"] == "written", mended.stderr
    refused = graphconv("run", model_dir, "--image", folder / "a.png", "--skip-failed")
    assert refused.returncode == 2 and "--skip-failed leaves out the images of an --images batch" in refused.stderr


def test_an_image_that_fails_after_its_map_keeps_its_earlier_map_s_stamp(tmp_path):
    """Its map, unchanged, is still graphconv's: a later run may replace it, whatever its shape."""
    np.save(tmp_path / "a.npy", np.zeros((1, 2, 3, 3), np.float32))
    Manifest(tmp_path).record("/p/a.png", str(tmp_path / "a.npy"), (1, 2, 3, 3), None, True)
    later = Manifest(tmp_path)
    later.record("/p/a.png", str(tmp_path / "a.npy"), None, "a.png: cut short", False)
    later.rewrite()
    assert rows(tmp_path)["a.npy"]["status"] == "failed" and Manifest(tmp_path).wrote(str(tmp_path / "a.npy"))


def test_a_heatmap_that_failed_is_the_row_s_error_beside_its_written_map(model_dir, tmp_path, monkeypatch):
    from graphconv import tiled_cli
    from graphconv.errors import GraphconvError

    folder = photos(tmp_path / "photos", {"a.png": (40, 40)})
    out = tmp_path / "maps"

    def broken(*args):
        raise GraphconvError("no room", file="a-heatmap-1.png")
    monkeypatch.setattr(tiled_cli, "_draw_heatmap", broken)
    result = graphconv("run", model_dir, "--images", folder, "--output-dir", out, "--heatmap", "1")
    assert result.returncode == 2
    row = rows(out)["a.npy"]
    assert row["status"] == "written" and "its heatmap not" in row["error"]


def test_a_list_saved_with_a_byte_order_mark_or_cut_short_by_a_kill_is_still_read(tmp_path):
    """A spreadsheet adds a byte-order mark; a kill mid-append leaves a row without its
    end (here inside a quoted error): rows appended after it were swallowed into it."""
    np.save(tmp_path / "a.npy", np.zeros((1, 2, 3, 3), np.float32))
    np.save(tmp_path / "c.npy", np.zeros((1, 2, 3, 3), np.float32))
    first = Manifest(tmp_path)
    first.record("/p/a.png", str(tmp_path / "a.npy"), (1, 2, 3, 3), None, True)
    first.record("/p/b.png", str(tmp_path / "b.npy"), None, 'bad "x",\nline 2', False)
    text = (tmp_path / "graphconv-maps.csv").read_text()
    (tmp_path / "graphconv-maps.csv").write_text("\ufeff" + text[:text.index("line 2")], newline="")
    later = Manifest(tmp_path)
    later.record("/p/c.png", str(tmp_path / "c.npy"), (1, 2, 3, 3), None, True)
    assert sorted(Manifest(tmp_path).rows) == ["a.npy", "c.npy"]
    assert Manifest(tmp_path).wrote(str(tmp_path / "a.npy")) and Manifest(tmp_path).wrote(str(tmp_path / "c.npy"))


def test_a_file_system_that_refuses_the_lock_still_gets_its_maps_and_rows(model_dir, tmp_path, monkeypatch):
    """flock refused (Lustre without -o flock): the batch stopped after its first map."""
    import fcntl

    def refused(fd, operation):
        raise OSError(38, "Function not implemented")
    monkeypatch.setattr(fcntl, "flock", refused)
    folder = photos(tmp_path / "photos", {"a.png": (40, 40), "b.png": (40, 40)})
    out = tmp_path / "maps"
    result = graphconv("run", model_dir, "--images", folder, "--output-dir", out)
    assert result.returncode == 0, result.stderr
    assert sorted(rows(out)) == ["a.npy", "b.npy"]


def test_a_listed_npy_map_of_another_image_of_the_same_name_is_refused_and_no_replaced_map_is_unsaid(
        model_dir, tmp_path):
    """Two cards' IMG_0001.JPG mapped into one folder in two runs: the first one's .npy map
    was replaced without a word (an .npy records no image); its row in the list does."""
    first = photos(tmp_path / "card1", {"IMG_0001.png": (40, 40)})
    second = photos(tmp_path / "card2", {"IMG_0001.png": (44, 40)})
    out = tmp_path / "maps"
    assert graphconv("run", model_dir, "--images", first, "--output-dir", out).returncode == 0
    result = graphconv("run", model_dir, "--images", second, "--output-dir", out)
    assert result.returncode == 2 and "IMG_0001.npy: is the map of " in result.stderr
    assert f"card1{os.sep}IMG_0001.png, another image than" in result.stderr
    assert rows(out)["IMG_0001.npy"]["image"] == str(first / "IMG_0001.png")
    result = graphconv("run", model_dir, "--images", first, "--output-dir", out)  # its own map: replaced, unsaid
    assert result.returncode == 0 and "were there and are replaced" not in result.stderr


def test_skip_existing_redoes_an_npy_map_of_its_shape_made_with_another_model_or_resize(model_dir, tmp_path):
    """An .npy records nothing of how it was made: a map of another model of as many
    classes, or of another --resize giving as many cells, was kept as this run's. Its row
    records the model and settings (`made_with`), as a .tif map states them."""
    import json
    import shutil

    folder = photos(tmp_path / "photos", {"a.png": (40, 50)})
    out = tmp_path / "maps"

    def batch(model, *extra):
        return graphconv("run", model, "--images", folder, "--output-dir", out, "--skip-existing", *extra)

    assert batch(model_dir, "--resize", "40").returncode == 0
    assert "no map to make" in batch(model_dir, "--resize", "40").stdout
    assert "1 of 1 image" in batch(model_dir, "--resize", "41").stdout  # 41x51: 3x5 cells, as 40x50
    twin = tmp_path / "twin"
    shutil.copytree(model_dir, twin)
    assert "1 of 1 image" in batch(twin, "--resize", "41").stdout
    made_with = json.loads(rows(out)["a.npy"]["made_with"])
    assert made_with["model"] == str(twin) and made_with["resize"] == [41] and made_with["classes"] is None
    assert "no map to make" in batch(twin, "--resize", "41").stdout
    [stored] = twin.glob("*.npz")
    with np.load(stored) as weights:
        np.savez(tmp_path / "retrained.npz", **{key: value * 0.5 for key, value in weights.items()})
    assert "1 of 1 image" in batch(twin, "--resize", "41", "--weights", tmp_path / "retrained.npz").stdout
    assert json.loads(rows(out)["a.npy"]["made_with"])["weights"] == str(tmp_path / "retrained.npz")


def test_a_batch_keeps_its_labels_once_not_in_every_row(tmp_path, write_spec):
    """A 1000-class model's names were in every row's made_with (17 KB a row: a batch of
    15,000 photos made a list past the size graphconv reads). They are kept once, in
    graphconv-labels.json, named by their digest; `graphconv cells` names the classes
    from there, and reads a row of before, which holds them itself."""
    import shutil

    model = tmp_path / "wide"
    labels = [f"a class with a long descriptive name number {k}" for k in range(1000)]
    (tmp_path / "wide.labels.txt").write_text("\n".join(labels) + "\n")
    spec = write_spec("name: wide\ninput: {name: data, shape: [1, 8, 8]}\nlabels: wide.labels.txt\nlayers:\n"
                      "  - {name: conv, op: conv, out_channels: 1000, kernel_size: 8}\n", "wide.yaml")
    assert graphconv("compile", spec, "-o", model).returncode == 0
    folder = photos(tmp_path / "photos", {f"p{k}.png": (12, 12) for k in range(3)})
    out = tmp_path / "maps"
    assert graphconv("run", model, "--images", folder, "--output-dir", out).returncode == 0
    listed = rows(out)
    assert all(len(row["made_with"]) < 2000 for row in listed.values()), "no row repeats the labels"
    kept = json.loads((out / "graphconv-labels.json").read_text())
    assert list(kept.values()) == [labels]
    assert {json.loads(row["made_with"])["labels_digest"] for row in listed.values()} == set(kept)
    assert graphconv("cells", out / "p0.npy", "-o", tmp_path / "cells.csv").returncode == 0
    named = [row["top_class"] for row in csv.DictReader(open(tmp_path / "cells.csv", newline=""))]
    assert named and all(name in labels for name in named)
    before = tmp_path / "before"  # a list of before: the labels in the row itself
    shutil.copytree(out, before)
    (before / "graphconv-labels.json").unlink()
    with open(before / "graphconv-maps.csv", newline="") as fp:
        old_rows = list(csv.DictReader(fp))
    for row in old_rows:
        made_with = json.loads(row["made_with"])
        del made_with["labels_digest"]
        row["made_with"] = json.dumps({**made_with, "labels": labels})
    with open(before / "graphconv-maps.csv", "w", newline="") as fp:
        writer = csv.DictWriter(fp, list(old_rows[0]))
        writer.writeheader()
        writer.writerows(old_rows)
    shutil.copystat(out / "p0.npy", before / "p0.npy")
    assert graphconv("cells", before / "p0.npy", "-o", tmp_path / "before.csv").returncode == 0
    assert (tmp_path / "before.csv").read_text() == (tmp_path / "cells.csv").read_text()
    result = graphconv("run", model, "--images", folder, "--output-dir", out, "--skip-existing")
    assert "no map to make" in result.stdout, "the rows name the labels: the maps are this run's"


@pytest.mark.parametrize("resize", [[], ["--resize", "52"]])
def test_a_row_places_its_maps_cells_on_the_image_as_a_tif_map_states(model_dir, tmp_path, resize):
    """An .npy map has no room for where its cells stand; a batch's row says it, in the
    image's own pixels (not the resized picture's)."""
    from graphconv.georef import stated_placement

    folder = photos(tmp_path / "photos", {"a.png": (40, 50), "b.png": (70, 45)})
    for fmt in ("npy", "tif"):
        assert graphconv("run", model_dir, "--images", folder, "--output-dir", tmp_path / fmt, "--output-format", fmt,
                         *resize).returncode == 0
    for name in ("a", "b"):
        row = rows(tmp_path / "npy")[f"{name}.npy"]
        stated = stated_placement(str(tmp_path / "tif" / f"{name}.tif"))
        for axis, (first, step, area) in enumerate(zip(("first_cell_centre_y", "first_cell_centre_x"),
                                                       ("cell_step_y", "cell_step_x"), ("cell_area_h", "cell_area_w"))):
            assert float(row[first]) == pytest.approx(stated["first_cell_centre_yx"][axis])
            assert float(row[step]) == pytest.approx(stated["cell_step_yx"][axis])
            assert float(row[area]) == pytest.approx(stated["cell_area_hw"][axis])
    row = rows(tmp_path / "npy")["a.npy"]
    scale = 40 / 52 if resize else 1  # a's shorter side, 40, read as 52: its cells 4 x 40/52 image pixels apart
    assert [float(row[k]) for k in ("cell_step_x", "cell_area_w")] == pytest.approx([4 * scale, 32 * scale])


def earlier_version_s_list(model_dir, folder, out, columns: int) -> list[list[str]]:
    """A batch's list as a version that wrote its first `columns` columns left it."""
    assert graphconv("run", model_dir, "--images", folder, "--output-dir", out).returncode == 0
    with open(out / "graphconv-maps.csv", newline="", encoding="utf-8") as file:
        earlier = [row[:columns] for row in csv.reader(file)]
    with open(out / "graphconv-maps.csv", "w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows(earlier)
    return earlier


def test_a_list_written_before_the_placement_columns_keeps_its_maps_and_rows(model_dir, tmp_path):
    folder = photos(tmp_path / "photos", {"a.png": (40, 50), "b.png": (40, 40)})
    out = tmp_path / "maps"
    earlier_version_s_list(model_dir, folder, out, 7)
    assert "no map to make" in graphconv("run", model_dir, "--images", folder, "--output-dir", out,
                                        "--skip-existing").stdout  # its rows say what made the maps
    photos(folder, {"c.png": (40, 44)})
    assert "1 of 1 image ->" in graphconv("run", model_dir, "--images", folder, "--output-dir", out,
                                             "--skip-existing").stdout
    now = rows(out)
    assert sorted(now) == ["a.npy", "b.npy", "c.npy"] and all(row["made_with"] for row in now.values())
    assert now["c.npy"]["cell_step_y"] == "4" and now["a.npy"]["cell_step_y"] == ""  # unknown: not guessed


def test_a_list_written_before_made_with_is_read_and_written_anew_with_it(model_dir, tmp_path):
    folder = photos(tmp_path / "photos", {"a.png": (40, 50), "b.png": (40, 40)})
    out = tmp_path / "maps"
    earlier = earlier_version_s_list(model_dir, folder, out, 6)
    listed = out / "graphconv-maps.csv"
    again = graphconv("run", model_dir, "--images", folder, "--output-dir", out, "--skip-existing")
    assert "2 of 2 images ->" in again.stdout, "read, and made again once: no row says what made its maps"
    assert "2 .npy maps in" in again.stderr and "have no row in its graphconv-maps.csv saying" in again.stderr
    photos(folder, {"c.png": (40, 44)})
    result = graphconv("run", model_dir, "--images", folder, "--output-dir", out, "--skip-existing")
    assert "1 of 1 image ->" in result.stdout and "no row" not in result.stderr
    now = rows(out)
    assert sorted(now) == ["a.npy", "b.npy", "c.npy"]
    assert all(row["made_with"].startswith("{") and row["map_stamp"] and row["cell_step_y"] for row in now.values())
    with open(listed, "a", newline="", encoding="utf-8") as file:  # an earlier version's batch into the folder
        csv.writer(file).writerow(earlier[1][:1] + ["d.npy"] + earlier[1][2:])
    photos(folder, {"e.png": (40, 44)})
    assert graphconv("run", model_dir, "--images", folder, "--output-dir", out, "--skip-existing").returncode == 0
    assert sorted(rows(out)) == ["a.npy", "b.npy", "c.npy", "d.npy", "e.npy"]  # its six-field row kept


def test_skip_existing_redoes_a_tif_map_made_with_other_weights(model_dir, tmp_path):
    """A .tif map states its model's path but stated no --weights: one made with the
    weights as compiled was kept for a run with retrained ones."""
    folder = photos(tmp_path / "photos", {"a.png": (40, 50)})
    out = tmp_path / "maps"

    def batch(*extra):
        return graphconv("run", model_dir, "--images", folder, "--output-dir", out, "--output-format", "tif",
                         "--skip-existing", *extra).stdout

    assert "1 of 1 image" in batch()
    [stored] = model_dir.glob("*.npz")
    with np.load(stored) as weights:
        np.savez(tmp_path / "retrained.npz", **{key: value * 0.5 for key, value in weights.items()})
    assert "1 of 1 image" in batch("--weights", tmp_path / "retrained.npz")
    assert "no map to make" in batch("--weights", tmp_path / "retrained.npz")


@pytest.mark.parametrize("output_format", ["npy", "tif"])
def test_skip_existing_redoes_the_maps_of_a_model_compiled_again_in_place_or_retrained_in_place(
        model_dir, tmp_path, output_format):
    """The model was told by its path alone: compiled again into the same folder with new
    weights, or its --weights file retrained in place, its maps from before were kept as
    this run's and the command said so with exit 0. The maps record the digest of the
    model's files; compiled again to the same bytes, they are still its maps."""
    import shutil

    folder = photos(tmp_path / "photos", {"a.png": (40, 50)})
    out, model = tmp_path / "maps", tmp_path / "model"
    shutil.copytree(model_dir, model)
    [stored] = model.glob("*.npz")
    with np.load(stored) as weights:
        np.savez(tmp_path / "retrained.npz", **{key: value * 0.5 for key, value in weights.items()})
    written = out / f"a.{output_format}"

    def batch(*extra):
        result = graphconv("run", model, "--images", folder, "--output-dir", out, "--output-format", output_format,
                           "--skip-existing", *extra)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def compile_model(*extra):
        assert graphconv("compile", model_dir, "-o", model, *extra).returncode == 0

    compile_model()
    assert "no map to make" not in batch()
    first = written.stat().st_mtime_ns
    compile_model()  # the same bytes again: the same model
    assert "no map to make" in batch() and written.stat().st_mtime_ns == first
    compile_model("--weights", tmp_path / "retrained.npz")
    assert "no map to make" not in batch() and written.stat().st_mtime_ns != first
    assert "no map to make" in batch()
    compile_model()
    before = written.stat().st_mtime_ns
    assert "no map to make" not in batch("--weights", tmp_path / "retrained.npz")
    assert "no map to make" in batch("--weights", tmp_path / "retrained.npz")
    with np.load(tmp_path / "retrained.npz") as weights:
        np.savez(tmp_path / "retrained.npz", **{key: value * 0.5 for key, value in weights.items()})
    assert "no map to make" not in batch("--weights", tmp_path / "retrained.npz")
    assert written.stat().st_mtime_ns != before


def test_a_map_is_listed_before_its_heatmap_is_drawn(model_dir, tmp_path):
    """A batch killed while it drew a heatmap (seconds for a slide's) left a finished map
    with no row saying what made it, made again by the next --skip-existing. The row is
    written first, and a heatmap that fails then adds its error to it."""
    from dataclasses import replace
    from graphconv.cluster import MapOptions, ModelRef, run_images
    folder = photos(tmp_path / "photos", {"a.png": (40, 50), "b.png": (40, 40)})
    out = tmp_path / "maps"
    listed_when_drawn = {}

    def draw(result):
        listed_when_drawn[result.image] = rows(out)[os.path.basename(result.output)]
        return replace(result, error="its map was written, its heatmap not: no room") if "b.png" in result.image \
            else None

    images = [str(folder / "a.png"), str(folder / "b.png")]
    run_images(ModelRef(str(model_dir)), images, str(out), MapOptions(), progress=draw)
    assert [row["status"] for row in listed_when_drawn.values()] == ["written", "written"]
    assert all(row["made_with"] and not row["error"] for row in listed_when_drawn.values())
    assert rows(out)["b.npy"]["status"] == "written" and "heatmap not" in rows(out)["b.npy"]["error"]
    assert rows(out)["a.npy"]["error"] == "" and rows(out)["b.npy"]["made_with"] == listed_when_drawn[images[1]][
        "made_with"]


def test_an_output_folder_copied_with_its_times_keeps_its_maps_for_skip_existing(model_dir, tmp_path):
    """Maps written to a node's scratch, copied to shared storage (cp -a, rsync -a: new
    inodes, times kept; Lustre keeps whole seconds), then a requeued batch with
    --skip-existing: every map was made again, said to have no row in the list."""
    import shutil

    folder = photos(tmp_path / "photos", {"a.png": (40, 50), "b.png": (40, 40)})
    scratch, shared = tmp_path / "scratch", tmp_path / "shared"
    assert graphconv("run", model_dir, "--images", folder, "--output-dir", scratch).returncode == 0
    shutil.copytree(scratch, shared)  # copy2: times kept, to the nanosecond where the file system has them
    a = shared / "a.npy"
    seconds = a.stat().st_mtime_ns // 10**9
    os.utime(a, ns=(seconds * 10**9, seconds * 10**9))  # a file system of whole seconds
    result = graphconv("run", model_dir, "--images", folder, "--output-dir", shared, "--skip-existing")
    assert result.returncode == 0 and "2 of 2 images have their map in" in result.stderr, result.stderr
    os.utime(a, ns=((seconds + 5) * 10**9,) * 2)  # copied without its time: not known to be the same map
    result = graphconv("run", model_dir, "--images", folder, "--output-dir", shared, "--skip-existing")
    assert "1 .npy map in" in result.stderr and "is not as graphconv-maps.csv recorded it" in result.stderr
    assert "no row" not in result.stderr and "1 of 1 image ->" in result.stdout


@pytest.mark.parametrize("columns", [13, 15], ids=["before-top", "before-damage"])
def test_a_list_written_before_the_later_columns_keeps_its_maps_and_gets_them(model_dir, tmp_path, columns):
    folder = photos(tmp_path / "photos", {"a.png": (40, 50), "b.png": (40, 40)})
    out = tmp_path / "maps"
    earlier_version_s_list(model_dir, folder, out, columns)
    again = graphconv("run", model_dir, "--images", folder, "--output-dir", out, "--skip-existing", "--top", "1")
    assert "no map to make" in again.stdout  # its rows say what made the maps
    assert all(json.loads(row["top"]) and row["top_by"] == "mean" for row in rows(out).values())


def ranking(row: dict[str, str]) -> list[tuple[str, float]]:
    return [(label, score) for label, score in json.loads(row["top"])]


@pytest.mark.parametrize("workers", [(), ("--workers", "2")])
def test_top_ranks_each_map_s_classes_in_its_row(model_dir, tmp_path, workers):
    """--top's lines on stdout come in the workers' order, named as the files are: a
    photo library's script wants them in the list, one row per photo, in any order."""
    from graphconv.classes import class_scores
    from graphconv.scales import top_classes

    folder = photos(tmp_path / "photos", {"a.png": (40, 50), "b.png": (44, 40), "c.png": (36, 36)})
    out = tmp_path / "maps"
    result = graphconv("run", model_dir, "--images", folder, "--output-dir", out, "--top", "3", "--top-by", "max",
                       "--classes", "7,2,4,9", *workers)
    assert result.returncode == 0, result.stderr
    listed = rows(out)
    for name in "abc":
        scores = class_scores(np.load(out / f"{name}.npy"), "max")[0]
        expected = top_classes(scores, 3, ["class 7", "class 2", "class 4", "class 9"])
        assert [label for label, _ in ranking(listed[f"{name}.npy"])] == [label for _, label, _ in expected]
        assert [score for _, score in ranking(listed[f"{name}.npy"])] == pytest.approx(
            [score for _, _, score in expected], rel=1e-5)
        assert listed[f"{name}.npy"]["top_by"] == "max"
    plain = graphconv("run", model_dir, "--images", folder, "--output-dir", tmp_path / "plain")
    assert plain.returncode == 0 and not any(row["top"] or row["top_by"] for row in rows(tmp_path / "plain").values())


def test_top_with_skip_existing_ranks_the_kept_maps_in_their_rows_too(model_dir, tmp_path):
    """A batch made without --top, ranked later: the maps kept get their classes as the
    maps made do (and a map failed since keeps its earlier row's)."""
    folder = photos(tmp_path / "photos", {"a.png": (40, 50), "b.png": (44, 40)})
    out = tmp_path / "maps"
    assert graphconv("run", model_dir, "--images", folder, "--output-dir", out).returncode == 0
    assert not rows(out)["a.npy"]["top"]
    photos(folder, {"c.png": (36, 36)})
    result = graphconv("run", model_dir, "--images", folder, "--output-dir", out, "--skip-existing", "--top", "2")
    assert result.returncode == 0 and "1 of 1 image ->" in result.stdout
    listed = rows(out)
    for name in "abc":
        scores = class_scores_of(out / f"{name}.npy")
        assert [score for _, score in ranking(listed[f"{name}.npy"])] == pytest.approx(
            sorted(scores, reverse=True)[:2], rel=1e-5)
        line = f"{folder / f'{name}.png'}: " + ", ".join(f"{label} {score:.4g}" for label, score in
                                                         ranking(listed[f"{name}.npy"]))
        assert line in result.stdout.splitlines()
    (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")  # edited since, and broken: its map stays
    failed = graphconv("run", model_dir, "--images", folder, "--output-dir", out, "--skip-existing", "--top", "2")
    assert failed.returncode == 2 and rows(out)["a.npy"]["status"] == "failed"
    assert rows(out)["a.npy"]["top"] == listed["a.npy"]["top"], "the earlier map's classes, as its stamp"


def class_scores_of(path) -> list[float]:
    return np.load(path)[0].mean(axis=(1, 2)).tolist()


def test_top_columns_hold_any_class_name_and_no_class_where_no_cell_was_computed(tmp_path):
    """Labels with ', ' or ': ' (the stdout line's separators) or quotes read back as
    they are; a map of no computed cell ranks no class."""
    manifest = Manifest(tmp_path)
    for name, top in (("a", (('dog, "good" boy', 0.75), ("héron: grey", 0.125))), ("b", ())):
        (tmp_path / f"{name}.npy").write_bytes(b"x")
        manifest.record(str(tmp_path / f"{name}.png"), str(tmp_path / f"{name}.npy"), (1, 2, 3, 4), None, True,
                        top=top, top_by=None)
    manifest.rewrite()
    listed = rows(tmp_path)
    assert ranking(listed["a.npy"]) == [('dog, "good" boy', 0.75), ("héron: grey", 0.125)]
    assert listed["a.npy"]["top_by"] == "mean" and listed["b.npy"]["top"] == "[]"
