"""`--from camera|pad` and `--profile` through the CLI: the same verdicts the file path gives."""
import json

import cv2
import numpy as np
import pytest

from conftest import cedar
from test_capture_camera import moving_then_steady, page_with, write_video
from test_capture_pad import jsonl_lines, pen_strokes, scanned, write

REFERENCES = [str(cedar(50, s)) for s in range(1, 6)]


@pytest.fixture
def cli(tiny_bundle, tmp_path):
    from click.testing import CliRunner

    from edge_verify.edge.cli import main

    def run(*args):
        return CliRunner().invoke(main, ["--model", str(tiny_bundle), "--db", str(tmp_path / "s.db"), *args])
    return run


def verdict(result):
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def test_check_from_a_camera_video_gives_the_file_verdict(cli, tmp_path):
    assert cli("enroll", "alice", *REFERENCES).exit_code == 0
    scan = cv2.imread(str(cedar(50, 10)), cv2.IMREAD_GRAYSCALE)
    video = write_video(tmp_path / "desk.avi", moving_then_steady(page_with(scan), np.random.default_rng(0)))
    from_file = verdict(cli("check", "alice", str(cedar(50, 10)), "--json"))
    from_camera = verdict(cli("check", "--from", "camera", "alice", str(video), "--json"))
    assert from_camera["match"] == from_file["match"]
    assert abs(from_camera["distance"] - from_file["distance"]) < 0.15


def test_enroll_and_check_from_pad_strokes_give_the_file_verdicts(cli, tmp_path):
    strokes = [pen_strokes(seed) for seed in range(6)]
    files = [write(tmp_path / f"s{i}.jsonl", jsonl_lines(s)) for i, s in enumerate(strokes)]
    scans = []
    for i, s in enumerate(strokes):
        path = tmp_path / f"s{i}.png"
        scanned(s, path)
        scans.append(str(path))
    pad = cli("enroll", "--from", "pad", "penny", *map(str, files[:5]), "--json")
    assert pad.exit_code == 0, pad.output
    by_file = cli("enroll", "filey", *scans[:5], "--json")
    assert by_file.exit_code == 0, by_file.output
    pad_check = verdict(cli("check", "--from", "pad", "penny", str(files[5]), "--json"))
    file_check = verdict(cli("check", "filey", scans[5], "--json"))
    assert pad_check["match"] == file_check["match"]
    assert abs(pad_check["distance"] - file_check["distance"]) < 0.15


def test_every_profile_resolves_in_info(cli):
    from edge_verify.edge.profiles import available_profiles, load_profile

    for name in available_profiles():
        result = cli("--profile", name, "info", "--json")
        if load_profile(name)["runtime"]["backend"] == "tflite_runtime":  # not installed here
            assert result.exit_code == 2 and "tflite_runtime runtime is not installed" in result.output
            continue
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["profile"]["name"] == name


def test_a_bad_profile_is_one_line_and_exit_2(cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[runtime]\nthreads = 'many'\n")
    result = cli("--profile", str(bad), "info")
    assert result.exit_code == 2
    assert "threads" in result.output and len(result.output.strip().splitlines()) == 1


def test_profile_threshold_is_used_unless_the_command_line_sets_one(cli, tmp_path):
    assert cli("enroll", "alice", *REFERENCES).exit_code == 0
    strict = tmp_path / "strict.toml"
    strict.write_text("[verify]\nthreshold = 0.0001\n")
    checked = verdict(cli("--profile", str(strict), "check", "alice", str(cedar(50, 10)), "--json"))
    assert checked["threshold"] == pytest.approx(0.0001) and checked["match"] is False
    override = verdict(cli("--profile", str(strict), "check", "alice", str(cedar(50, 10)),
                           "--threshold", "1.9", "--json"))
    assert override["threshold"] == pytest.approx(1.9) and override["match"] is True
