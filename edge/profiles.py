"""Device profiles: TOML files naming the runtime, capture source and policy for one board.

`load_profile(name_or_path)` merges a profile over firmware_configs/default.toml (the one place
defaults live), checks every key against SCHEMA and returns the resolved settings as a dict of
sections. Anything wrong raises ProfileError naming the file, the key and what was expected.
"""
from importlib import resources
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from edge_verify.edge.choices import BACKENDS, DELEGATES, SOURCES, VARIANTS
from edge_verify.edge.errors import ProfileError

PROFILES_PACKAGE = "edge_verify.firmware_configs"
DEFAULT_NAME = "default"

# Allowed keys per section: a tuple of allowed values, or a type (int means an integer >= 0,
# float any number, str any text, bool true/false).
SCHEMA = {
    "runtime": {
        "backend": BACKENDS,
        "delegate": DELEGATES,
        "threads": int,
        "model": str,
        "variant": VARIANTS,
    },
    "capture": {"source": SOURCES},
    "capture.camera": {
        "backend": ("opencv", "picamera2"),
        "device": (int, str),
        "width": int,
        "height": int,
        "format": ("RGB888", "BGR888"),
        "fourcc": str,
        "trigger": ("steady", "key"),
        "steady_frames": int,
        "steady_threshold": float,
        "max_frames": int,
        "find_page": bool,
    },
    "capture.pad": {
        "port": str,
        "baudrate": int,
        "format": ("jsonl", "csv"),
        "timeout_s": float,
    },
    "store": {"data_dir": str},
    "verify": {"threshold": ("calibrated", float)},
    "security": {"max_failed_checks": int, "lockout_seconds": int},
}
AT_LEAST_ONE = {"runtime.threads", "capture.camera.width", "capture.camera.height",
                "capture.camera.steady_frames", "capture.camera.max_frames", "capture.pad.baudrate"}


def available_profiles() -> list[str]:
    """Names of the profiles shipped in firmware_configs/ (without the default)."""
    folder = resources.files(PROFILES_PACKAGE)
    return sorted(p.name[:-5] for p in folder.iterdir()
                  if p.name.endswith(".toml") and p.name[:-5] != DEFAULT_NAME)


def load_profile(name_or_path: str | Path | None = None) -> dict:
    """The resolved, validated settings of a profile name, a .toml path, or None (defaults only).

    Returns {"profile": {"name", "path"}, "runtime": {...}, "capture": {"source", "camera": {...},
    "pad": {...}}, "store": {...}, "verify": {...}, "security": {...}}.
    """
    defaults_path = resources.files(PROFILES_PACKAGE) / f"{DEFAULT_NAME}.toml"
    settings = _read_toml(defaults_path)
    _check(settings, defaults_path, require_all=True)
    path = defaults_path if name_or_path is None else _find(name_or_path)
    if path != defaults_path:
        overrides = _read_toml(path)
        _check(overrides, path, require_all=False)
        settings = _merge(settings, overrides)
    _check_consistency(settings, path)
    _resolve_paths(settings, Path(str(path)))
    name = DEFAULT_NAME if name_or_path is None else Path(str(path)).stem
    return {"profile": {"name": name, "path": str(path)}, **settings}


def describe_profile(profile: dict) -> str:
    """The resolved settings as `section.key = value` lines (what `edge-verify info` prints)."""
    lines = []
    for section, table in _flatten_tables(profile, "profile").items():
        for key, value in table.items():
            shown = str(value).lower() if isinstance(value, bool) else repr(value)
            lines.append(f"{section}.{key} = {shown}")
    return "\n".join(lines)


def _find(name_or_path) -> Path:
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text or "\\" in text:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ProfileError(f"profile file not found: {path}")
        return path
    candidate = resources.files(PROFILES_PACKAGE) / f"{text}.toml"
    if not candidate.is_file():
        raise ProfileError(f"unknown profile {text!r}; known profiles: {', '.join(available_profiles())}"
                           " (or give the path of a .toml file)")
    return candidate


def _read_toml(path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ProfileError(f"{path}: not valid TOML: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ProfileError(f"{path}: cannot read the profile: {error}") from None


def _check(data: dict, path, require_all: bool) -> None:
    """Unknown sections/keys, wrong types and (for the defaults) missing keys."""
    tables = _flatten_tables(data, path)
    for section, table in tables.items():
        if section not in SCHEMA:
            raise ProfileError(f"{path}: unknown section [{section}]; known sections: "
                               + ", ".join(f"[{s}]" for s in SCHEMA))
        for key, value in table.items():
            if key not in SCHEMA[section]:
                raise ProfileError(f"{path}: [{section}] unknown key {key!r}; known keys: "
                                   + ", ".join(SCHEMA[section]))
            problem = _type_problem(f"{section}.{key}", SCHEMA[section][key], value)
            if problem:
                raise ProfileError(f"{path}: [{section}] {key}: expected {problem}, got {value!r}")
    if require_all:
        for section, keys in SCHEMA.items():
            for key in keys:
                if key not in tables.get(section, {}):
                    raise ProfileError(f"{path}: [{section}] {key} is missing")


def _flatten_tables(data: dict, path, prefix: str = "") -> dict:
    """{"capture": {"source": .., "camera": {..}}} -> {"capture": {"source": ..}, "capture.camera": {..}}."""
    tables = {}
    for name, value in data.items():
        section = prefix + name
        if not isinstance(value, dict):
            where = f"[{prefix[:-1]}] {name}" if prefix else name
            raise ProfileError(f"{path}: {where} must sit inside a [section]; known sections: "
                               + ", ".join(f"[{s}]" for s in SCHEMA))
        tables[section] = {k: v for k, v in value.items() if not isinstance(v, dict)}
        nested = {k: v for k, v in value.items() if isinstance(v, dict)}
        tables.update(_flatten_tables(nested, path, section + "."))
    return tables


def _type_problem(name: str, rule, value) -> str | None:
    """None when value fits rule, else a description of what was expected."""
    if isinstance(rule, type):
        rule = (rule,)
    types = [r for r in rule if isinstance(r, type)]
    choices = [r for r in rule if not isinstance(r, type)]
    if value in choices:
        return None
    minimum = 1 if name in AT_LEAST_ONE else 0
    for kind in types:
        if kind is bool and isinstance(value, bool):
            return None
        if kind is int and isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return None
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            if value == value and abs(value) != float("inf"):
                return None
        if kind is str and isinstance(value, str):
            return None
    words = {bool: "true or false", int: f"an integer >= {minimum}", float: "a number", str: "a text"}
    expected = [" or ".join(repr(c) for c in choices)] if choices else []
    return " or ".join(expected + [words[kind] for kind in types])


def _merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) else value
    return merged


def _check_consistency(settings: dict, path) -> None:
    runtime = settings["runtime"]
    if (runtime["delegate"] == "edgetpu") != (runtime["variant"] == "edgetpu"):
        raise ProfileError(f"{path}: [runtime] delegate and variant: the Edge TPU needs both "
                           f"delegate = \"edgetpu\" and variant = \"edgetpu\", got delegate = "
                           f"{runtime['delegate']!r}, variant = {runtime['variant']!r}")
    if runtime["delegate"] == "edgetpu" and runtime["backend"] == "tensorflow":
        raise ProfileError(f"{path}: [runtime] backend: the edgetpu delegate needs backend "
                           "\"litert\" or \"tflite_runtime\", got \"tensorflow\"")
    threshold = settings["verify"]["threshold"]
    if not isinstance(threshold, str) and not 0.0 <= threshold <= 2.0:
        raise ProfileError(f"{path}: [verify] threshold: expected \"calibrated\" or a distance "
                           f"between 0 and 2 (as --threshold), got {threshold!r}")


def _resolve_paths(settings: dict, profile_path: Path) -> None:
    """Expand "~", make relative paths relative to the profile file, check the model folder exists."""
    runtime, store = settings["runtime"], settings["store"]
    for section, key in (("runtime", "model"), ("store", "data_dir")):
        if "\0" in settings[section][key]:
            raise ProfileError(f"{profile_path}: [{section}] {key}: a path cannot contain a NUL character")
    if runtime["model"] != "default":
        model = _absolute(runtime["model"], profile_path)
        try:
            is_bundle = (model / "manifest.json").is_file()
        except OSError:  # e.g. a name too long for the file system
            is_bundle = False
        if not is_bundle:
            raise ProfileError(f"{profile_path}: [runtime] model: expected \"default\" or a model "
                               f"bundle folder with a manifest.json, got {str(model)!r}")
        runtime["model"] = str(model)
    if store["data_dir"]:
        store["data_dir"] = str(_absolute(store["data_dir"], profile_path))


def _absolute(text: str, profile_path: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else (profile_path.parent / path).resolve()
