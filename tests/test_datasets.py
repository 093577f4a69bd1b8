"""Dataset readers: real CEDAR and BHSig-Bengali, synthetic sigcomp / generic / BHSig folders."""
import hashlib
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_verify.training.datasets import (
    DatasetError, detect_layout, list_signatures, main, read_signatures, remove_duplicates, select_split,
    writer_split,
)

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
_pixel = iter(range(10**6))


def write_image(path: Path, value=None) -> Path:
    """A tiny real PNG/TIFF; each call gives different bytes unless `value` is repeated."""
    value = next(_pixel) if value is None else value
    image = np.full((4, 6), 255, np.uint8)
    image.flat[: value % 24 + 1] = value % 251
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix.lower(), image)
    assert ok
    path.write_bytes(data.tobytes())
    return path


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def cedar():
    return read_signatures(DATASETS / "cedar")


@pytest.fixture(scope="module")
def bengali():
    return remove_duplicates(list_signatures(DATASETS / "bhsig260-bengali"))


# ---------------------------------------------------------------- real data


def test_cedar_has_55_writers_with_24_genuine_and_24_forgeries(cedar):
    assert detect_layout(DATASETS / "cedar") == "cedar"
    assert {s.dataset for s in cedar} == {"cedar"}
    assert len({s.writer for s in cedar}) == 55
    assert sum(s.genuine for s in cedar) == 1320
    assert sum(not s.genuine for s in cedar) == 1320
    per_writer = Counter((s.writer, s.genuine) for s in cedar)
    assert set(per_writer.values()) == {24}
    assert sorted(s.sample for s in cedar if s.writer == "7" and s.genuine) == list(range(1, 25))
    assert all(("original" in s.path.name) == s.genuine for s in cedar)


def test_cedar_split_is_the_fixed_one(cedar):
    writers = {split: {s.writer for s in select_split(cedar, split)} for split in ("train", "val", "test")}
    assert writers["test"] == {str(w) for w in range(46, 56)}
    assert writers["val"] == {str(w) for w in range(41, 46)}
    assert len(writers["train"]) == 40
    assert len(select_split(cedar, "all")) == len(cedar)


def test_bengali_duplicates_are_removed(bengali):
    kept, removed = bengali
    assert detect_layout(DATASETS / "bhsig260-bengali") == "bhsig"
    assert len(kept) + len(removed) == 5400
    assert len(removed) == 1004  # documented defect of the distributed data
    hashes = {sha(s.path): s for s in kept}
    assert len(hashes) == len(kept)  # no two kept files share content
    for s in removed:  # each removed file has a kept twin of the same writer, earlier by path
        twin = hashes[sha(s.path)]
        assert twin.writer == s.writer and str(twin.path) < str(s.path)


def test_bengali_writers_and_split(bengali):
    kept, _ = bengali
    assert {s.dataset for s in kept} == {"bhsig-bengali"}
    assert len({s.writer for s in kept}) == 100
    assert {s.writer for s in select_split(kept, "test")} == {f"{w:03d}" for w in range(91, 101)}
    assert {s.writer for s in select_split(kept, "val")} == {f"{w:03d}" for w in range(81, 91)}
    assert len({s.writer for s in select_split(kept, "train")}) == 80
    assert writer_split("bhsig-bengali", "091") == "test" and writer_split("cedar", "45") == "val"


def test_results_are_sorted_genuine_first_by_sample(cedar):
    assert read_signatures(DATASETS / "cedar") == cedar
    writer_7 = [s for s in cedar if s.writer == "7"]
    assert [s.genuine for s in writer_7] == [True] * 24 + [False] * 24
    assert [s.sample for s in writer_7[:24]] == list(range(1, 25))
    writers_in_order = list(dict.fromkeys(s.writer for s in cedar))
    assert writers_in_order == [str(w) for w in range(1, 56)]


# ---------------------------------------------------------------- synthetic layouts


def make_sigcomp(root: Path) -> Path:
    """Kaggle sign_data style: train naming NNN_SS / FFFFNNN_SS, test naming SS_NNN / SS_FFFFNNN."""
    for s in (1, 2, 3):
        write_image(root / "001" / f"001_{s:02d}.PNG")
        write_image(root / "001_forg" / f"0119001_{s:02d}.png")
        write_image(root / "049" / f"{s:02d}_049.png")
        write_image(root / "049_forg" / f"{s:02d}_0114049.PNG")
        write_image(root / "049_forg" / f"{s:02d}_0206049.PNG")
    (root / "train_data.csv").write_text("001/001_01.PNG,001_forg/0119001_01.png,1\n")
    return root


def test_sigcomp_layout_maps_forgeries_to_the_forged_writer(tmp_path):
    root = make_sigcomp(tmp_path / "train")
    assert detect_layout(root) == "sigcomp"
    signatures = read_signatures(root)
    assert {s.dataset for s in signatures} == {"train"}
    forged = Counter(s.writer for s in signatures if not s.genuine)
    assert forged == {"001": 3, "049": 6}
    assert sorted(s.sample for s in signatures if s.writer == "049" and s.genuine) == [1, 2, 3]
    assert sorted(s.sample for s in signatures if s.writer == "001" and not s.genuine) == [1, 2, 3]
    one = next(s for s in signatures if s.path.name == "02_0206049.PNG")
    assert (one.writer, one.genuine, one.sample) == ("049", False, 2)


def test_sigcomp_forgery_of_another_writer_is_rejected(tmp_path):
    root = make_sigcomp(tmp_path / "sig")
    write_image(root / "001_forg" / "0119002_04.png")
    with pytest.raises(DatasetError, match="0119002_04.png"):
        read_signatures(root)


def test_sigcomp_forgeries_without_genuine_folder_are_rejected(tmp_path):
    root = make_sigcomp(tmp_path / "sig")
    write_image(root / "007_forg" / "0119007_01.png")
    with pytest.raises(DatasetError, match="writer 007 has forgeries but no genuine"):
        read_signatures(root)


def make_generic(root: Path, writers) -> Path:
    for w in writers:
        for s in (1, 2):
            write_image(root / w / "genuine" / f"sig_{s}.png")
        write_image(root / w / "forged" / "f1.png")
    return root


def test_generic_layout_and_its_split_rule(tmp_path):
    writers = [f"person{i:02d}" for i in range(20)]
    root = make_generic(tmp_path / "my-signatures", writers)
    (root / ".DS_Store").write_bytes(b"junk")
    (root / writers[0] / "genuine" / "Thumbs.db").write_bytes(b"junk")
    assert detect_layout(root) == "generic"
    signatures = read_signatures(root)
    assert len(signatures) == 60 and {s.dataset for s in signatures} == {"my-signatures"}
    assert {s.writer for s in select_split(signatures, "test")} == {"person18", "person19"}
    assert {s.writer for s in select_split(signatures, "val")} == {"person16", "person17"}
    assert len({s.writer for s in select_split(signatures, "train")}) == 16


def test_small_unknown_dataset_still_gets_one_writer_per_held_out_split(tmp_path):
    signatures = read_signatures(make_generic(tmp_path / "tiny", ["a", "b", "c"]))
    assert [{s.writer for s in select_split(signatures, split)} for split in ("train", "val", "test")] \
        == [{"a"}, {"b"}, {"c"}]
    two = read_signatures(make_generic(tmp_path / "two", ["a", "b"]))
    with pytest.raises(DatasetError, match="at least 3"):
        select_split(two, "test")
    assert len(select_split(two, "all")) == 6


def test_exact_duplicates_keep_the_first_path(tmp_path):
    root = make_generic(tmp_path / "dups", ["1", "2", "3"])
    write_image(root / "2" / "genuine" / "sig_9.png", value=4000)
    write_image(root / "2" / "genuine" / "sig_3.png", value=4000)
    kept, removed = remove_duplicates(list_signatures(root))
    assert [s.path.name for s in removed] == ["sig_9.png"]
    assert len(kept) == 10 and len(read_signatures(root)) == 10


def test_original_bhsig_naming(tmp_path):
    root = tmp_path / "Bengali"
    for w in (1, 2):
        for s in (1, 2):
            write_image(root / str(w) / f"B-S-{w}-G-{s:02d}.tif")
            write_image(root / str(w) / f"B-S-{w}-F-{s:02d}.tif")
    assert detect_layout(root) == "bhsig"
    signatures = read_signatures(root)
    assert {s.dataset for s in signatures} == {"bhsig-bengali"}
    assert Counter((s.writer, s.genuine) for s in signatures) == {
        ("1", True): 2, ("1", False): 2, ("2", True): 2, ("2", False): 2}


def test_cedar_zip_subfolders(tmp_path):
    root = tmp_path / "signatures"
    write_image(root / "full_org" / "original_1_1.png")
    write_image(root / "full_org" / "original_1_2.png")
    write_image(root / "full_forg" / "forgeries_1_1.png")
    (root / "full_org" / "Thumbs.db").write_bytes(b"junk")
    assert detect_layout(root) == "cedar"
    assert [(s.writer, s.genuine, s.sample) for s in read_signatures(root)] == [
        ("1", True, 1), ("1", True, 2), ("1", False, 1)]


# ---------------------------------------------------------------- malformed folders


def test_unknown_file_name_is_named(tmp_path):
    write_image(tmp_path / "original_1_1.png")
    write_image(tmp_path / "scan_0042.png")
    with pytest.raises(DatasetError, match="scan_0042.png"):
        read_signatures(tmp_path)


def test_writer_folder_without_genuine_is_named(tmp_path):
    root = make_generic(tmp_path / "g", ["anna", "ben"])
    write_image(root / "carl" / "forged" / "f1.png")
    with pytest.raises(DatasetError, match=r"carl.*genuine/"):
        read_signatures(root, layout="generic")


def test_file_without_sample_number_is_named(tmp_path):
    root = make_generic(tmp_path / "g", ["anna"])
    write_image(root / "anna" / "genuine" / "best.png")
    with pytest.raises(DatasetError, match="best.png"):
        read_signatures(root)


def test_stray_file_in_image_folder_is_named(tmp_path):
    root = make_generic(tmp_path / "g", ["anna"])
    (root / "anna" / "genuine" / "notes.docx").write_bytes(b"x")
    with pytest.raises(DatasetError, match="notes.docx"):
        read_signatures(root)


def test_empty_missing_and_unrecognised_folders(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_signatures(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="cannot tell the layout.*expected one of"):
        read_signatures(tmp_path)
    (tmp_path / "writer_001" / "genuine").mkdir(parents=True)
    with pytest.raises(DatasetError, match="writer_001"):
        read_signatures(tmp_path)
    with pytest.raises(DatasetError, match="unknown layout"):
        read_signatures(tmp_path, layout="kaggle")


# ---------------------------------------------------------------- command line


def test_command_line_prints_split_counts(tmp_path, capsys):
    root = make_generic(tmp_path / "g", [f"{w:02d}" for w in range(1, 11)])
    write_image(root / "03" / "genuine" / "sig_3.png", value=5000)
    write_image(root / "03" / "genuine" / "sig_4.png", value=5000)
    assert main([str(root)]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["train"] == ["8", "17", "8", "1"]
    assert rows["test"] == ["1", "2", "1", "0"]
    assert rows["all"] == ["10", "21", "10", "1"]
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------- the four added sets


@pytest.mark.parametrize("name, layout, writers, genuine, forged", [
    ("svc2004", "generic", 40, 800, 800),
    ("mcyt100-online", "strokes", 100, 1100, 750),
    ("sigwicomp2013-japanese", "strokes", 11, 462, 396),
])
def test_added_sets_are_read_with_the_counts_of_their_readme(name, layout, writers, genuine, forged):
    signatures = read_signatures(DATASETS / name)
    assert detect_layout(DATASETS / name) == layout
    assert len({s.writer for s in signatures}) == writers
    assert Counter(s.genuine for s in signatures) == {True: genuine, False: forged}
    assert not select_split(signatures, "test")  # training data: only some writers are held out for validation


def test_crossmedia_writers_are_people_writing_one_name_forged_by_others_of_the_same_split():
    signatures = read_signatures(DATASETS / "crossmedia-chinese")
    genuine = [s for s in signatures if s.genuine]
    assert len(genuine) == 4174 and len({s.writer for s in genuine}) == 1110  # 111 people x 10 names
    owner = {s.path: s.writer for s in genuine}
    for s in signatures:
        if not s.genuine:
            forger = owner[s.path]
            assert forger != s.writer and forger[-2:] == s.writer[-2:]  # another person, the same name
            assert not s.imitation  # their own writing: no forgery cue to learn from it
            assert writer_split(s.dataset, forger) == writer_split(s.dataset, s.writer)
    assert writer_split("crossmedia-chinese", "e095-03") == "val"
    assert writer_split("crossmedia-chinese", "c09-03") == "train"  # control writers are another series


def test_the_device_rendering_of_a_stroke_file_is_variant_0_and_other_variants_differ():
    from edge_verify.edge.capture.pad import read_stroke_file, render_strokes
    from edge_verify.training.strokes import render_variant

    path = DATASETS / "mcyt100-online" / "writer_001" / "genuine" / "genuine_01.csv"
    device = render_strokes(read_stroke_file(path))
    assert np.array_equal(render_variant(path, 0), device)
    variants = [render_variant(path, v) for v in (1, 2)]
    assert all(v.dtype == np.uint8 and v.shape != device.shape or not np.array_equal(v, device) for v in variants)
    assert np.array_equal(render_variant(path, 1), variants[0])  # a variant is the same every time


def test_a_bent_variant_is_the_same_pen_on_a_slightly_different_path_and_gets_its_own_cache(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow")  # training.train
    from edge_verify.edge.capture.pad import read_stroke_file
    from edge_verify.training.arrays import preprocessed_images
    from edge_verify.training.strokes import bent, render_variant
    from edge_verify.training.train import with_stroke_variants

    path = DATASETS / "mcyt100-online" / "writer_001" / "genuine" / "genuine_01.csv"
    strokes = read_stroke_file(path)
    moved = bent(strokes, 0.05, np.random.default_rng(0))
    assert [len(s) for s in moved] == [len(s) for s in strokes]
    points, moved_points = np.concatenate(strokes), np.concatenate(moved)
    assert np.array_equal(points[:, 2], moved_points[:, 2])  # the pressure is the writer's
    shift = np.linalg.norm(moved_points[:, :2] - points[:, :2], axis=1)
    height = np.ptp(points[:, 1])
    assert 0.005 * height < shift.mean() < 0.25 * height  # a little, not a new signature
    assert np.abs(np.diff(shift)).max() < 0.02 * height  # smooth along the path: strokes stay whole
    assert np.array_equal(render_variant(path, 1, bend=0.05), render_variant(path, 1, bend=0.05))
    assert not np.array_equal(render_variant(path, 1, bend=0.05), render_variant(path, 1))

    monkeypatch.setenv("EDGE_VERIFY_CACHE", str(tmp_path))
    [signature] = [s for s in read_signatures(DATASETS / "mcyt100-online") if s.path == path]
    plain, bent_twice = (with_stroke_variants([signature], 2, bend) for bend in (0.0, 0.05))
    assert plain[0] == bent_twice[0]  # variant 0 is always the device's drawing
    images = [preprocessed_images(records, (96, 192), workers=1) for records in (plain, bent_twice)]
    assert np.array_equal(images[0][0], images[1][0]) and not np.array_equal(images[0][1], images[1][1])
