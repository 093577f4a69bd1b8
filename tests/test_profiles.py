"""Device profiles: the shipped boards load, a profile overrides the defaults, and every mistake in
a profile file is refused with a ProfileError naming the file, the key and what was expected."""
from importlib import resources
from pathlib import Path

import pytest

from edge_verify.edge.errors import ProfileError
from edge_verify.edge.profiles import available_profiles, describe_profile, load_profile

BOARDS = ["coral-devboard", "jetson-orin-nano", "rpi4-cpu", "rpi5-coral-usb", "x86-kiosk"]


def profile_file(tmp_path, text: str, name: str = "mine.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_supported_board_has_a_profile_that_loads():
    assert available_profiles() == BOARDS
    for board in BOARDS:
        profile = load_profile(board)
        assert profile["profile"]["name"] == board
        assert set(profile) == {"profile", "runtime", "capture", "store", "verify", "security"}
        assert profile["capture"]["source"] in ("file", "camera", "pad")
        assert profile["security"]["max_failed_checks"] >= 1


def test_board_profiles_say_how_to_install_the_runtime():
    for board in BOARDS:
        text = (resources.files("edge_verify.firmware_configs") / f"{board}.toml").read_text()
        header = text.split("\n[")[0]
        assert header.startswith("#") and "Install" in header and "pip install" in header, board


def test_edge_tpu_boards_use_the_edge_tpu_model():
    for board in ("rpi5-coral-usb", "coral-devboard"):
        runtime = load_profile(board)["runtime"]
        assert runtime["delegate"] == "edgetpu" and runtime["variant"] == "edgetpu"
    assert load_profile("rpi4-cpu")["capture"]["camera"]["backend"] == "picamera2"
    assert load_profile("rpi4-cpu")["capture"]["camera"]["format"] == "RGB888"


def test_a_profile_overrides_only_what_it_names(tmp_path):
    defaults = load_profile()
    path = profile_file(tmp_path, '[runtime]\nthreads = 3\n[capture.camera]\nwidth = 640\n[verify]\nthreshold = 0.5\n')

    profile = load_profile(path)

    assert profile["runtime"]["threads"] == 3
    assert profile["capture"]["camera"]["width"] == 640
    assert profile["verify"]["threshold"] == 0.5
    assert profile["capture"]["camera"]["height"] == defaults["capture"]["camera"]["height"]
    assert profile["runtime"]["backend"] == defaults["runtime"]["backend"]
    assert profile["profile"] == {"name": "mine", "path": str(path)}


def test_paths_expand_home_and_resolve_next_to_the_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    bundle = tmp_path / "models" / "v2"
    bundle.mkdir(parents=True)
    (bundle / "manifest.json").write_text("{}")
    path = profile_file(tmp_path, '[runtime]\nmodel = "models/v2"\n[store]\ndata_dir = "~/signatures"\n')

    profile = load_profile(path)

    assert profile["runtime"]["model"] == str(bundle)
    assert profile["store"]["data_dir"] == str(tmp_path / "home" / "signatures")


def test_info_lists_the_resolved_settings():
    text = describe_profile(load_profile("x86-kiosk"))
    assert "runtime.threads = 4" in text
    assert "capture.pad.port = '/dev/ttyACM0'" in text
    assert "capture.camera.find_page = true" in text
    assert "security.max_failed_checks = 3" in text


@pytest.mark.parametrize("text, message", [
    ("[runtime]\nthread = 4\n", r"\[runtime\] unknown key 'thread'; known keys: backend, delegate, threads"),
    ("[runtim]\nthreads = 4\n", r"unknown section \[runtim\]"),
    ("[capture.scanner]\ndpi = 300\n", r"unknown section \[capture.scanner\]"),
    ("threads = 4\n", r"threads must sit inside a \[section\]"),
    ('[runtime]\nthreads = "four"\n', r"\[runtime\] threads: expected an integer >= 1, got 'four'"),
    ("[runtime]\nthreads = 0\n", r"\[runtime\] threads: expected an integer >= 1, got 0"),
    ("[runtime]\nthreads = 2.5\n", r"threads: expected an integer >= 1, got 2.5"),
    ("[security]\nlockout_seconds = -5\n", r"\[security\] lockout_seconds: expected an integer >= 0"),
    ("[security]\nmax_failed_checks = true\n", r"max_failed_checks: expected an integer >= 0, got True"),
    ('[runtime]\nbackend = "onnx"\n', r"backend: expected 'litert' or 'tflite_runtime' or 'tensorflow', got 'onnx'"),
    ('[verify]\nthreshold = "auto"\n', r"threshold: expected 'calibrated' or a number, got 'auto'"),
    ("[verify]\nthreshold = -0.1\n", r"threshold: expected \"calibrated\" or a distance between 0 and 2"),
    ("[capture.camera]\nfind_page = 1\n", r"find_page: expected true or false, got 1"),
    ("[capture.camera]\ndevice = 1.5\n", r"device: expected an integer >= 0 or a text, got 1.5"),
    ('[runtime]\ndelegate = "edgetpu"\n', r"the Edge TPU needs both delegate = \"edgetpu\" and variant = \"edgetpu\""),
    ('[runtime]\nmodel = "no/such/bundle"\n', r"\[runtime\] model: expected \"default\" or a model bundle folder"),
    ("[runtime\nthreads = 4\n", r"not valid TOML"),
])
def test_profile_mistakes_name_file_key_and_expectation(tmp_path, text, message):
    path = profile_file(tmp_path, text)
    with pytest.raises(ProfileError, match=message) as error:
        load_profile(path)
    assert str(path) in str(error.value)


def test_unknown_profile_names_and_missing_files_are_refused(tmp_path):
    with pytest.raises(ProfileError, match="unknown profile 'rpi3'; known profiles: coral-devboard, jetson"):
        load_profile("rpi3")
    with pytest.raises(ProfileError, match="profile file not found: .*missing.toml"):
        load_profile(tmp_path / "missing.toml")
