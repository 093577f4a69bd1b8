"""The device package stands alone: nothing under edge/ imports the workstation (training/,
convert/) or TensorFlow, neither in its source nor when `edge-verify` runs. The workstation
commands reach the CLI through the entry-point group edge/cli.py reads (pyproject.toml)."""
import ast
import importlib.util
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import edge_verify_process
from edge_verify import edge
from edge_verify.edge.cli import main, registered_commands

EDGE = Path(edge.__file__).resolve().parent
WORKSTATION = ("edge_verify.training", "edge_verify.convert")
TENSORFLOW = ("tensorflow", "keras", "tf_keras")


def forbidden(name: str) -> bool:
    return name.startswith(WORKSTATION) or name.split(".")[0] in TENSORFLOW


def imported_names(path: Path, root: Path = EDGE):
    """(line, module) for every import statement in a file under `root` (the package
    edge_verify.edge), relative ones resolved."""
    package = "edge_verify." + ".".join(path.relative_to(root.parent).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            yield node.lineno, module
            yield from ((node.lineno, f"{module}.{alias.name}") for alias in node.names)


def test_no_source_file_of_the_device_package_names_the_workstation_or_tensorflow():
    """Import statements, and strings that name a workstation module (importlib's import strings).
    The one TensorFlow name edge/ holds is the runtime a profile may ask for ("tensorflow", for
    tensorflow.lite); the run-time test below shows it is never loaded unasked."""
    files = sorted(EDGE.rglob("*.py"))
    assert EDGE / "cli.py" in files and EDGE / "capture" / "__init__.py" in files
    found = []
    for path in files:
        found += [f"{path.relative_to(EDGE.parent)}:{line}: import {name}"
                  for line, name in imported_names(path) if forbidden(name)]
        found += [f"{path.relative_to(EDGE.parent)}:{node.lineno}: {node.value!r}"
                  for node in ast.walk(ast.parse(path.read_text()))
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and any(name in node.value for name in WORKSTATION)]
    assert found == []


def test_the_scan_sees_relative_and_absolute_imports(tmp_path):
    module = tmp_path / "edge" / "capture" / "bad.py"
    module.parent.mkdir(parents=True)
    module.write_text("import os\nfrom ...training import datasets\nfrom edge_verify import convert\n"
                      "import keras.layers\n")
    names = [name for _, name in imported_names(module, tmp_path / "edge") if forbidden(name)]
    assert names == ["edge_verify.training", "edge_verify.training.datasets", "edge_verify.convert",
                     "keras.layers"]


def imported_by(*args, folder: Path) -> set[str]:
    """The modules `edge-verify ARGS` imports in a fresh process, asserting that it succeeds."""
    code, modules, messages = edge_verify_process(folder, *args)
    assert code == 0, messages
    return modules


def test_help_info_enroll_and_check_with_the_bundled_model_load_no_workstation_module(default_bundle, tmp_path):
    db = ["--db", tmp_path / "store.sqlite3"]
    demo = EDGE / "demo"
    runs = {"--help": imported_by("--help", folder=tmp_path),
            "info": imported_by(*db, "info", folder=tmp_path),
            "enroll": imported_by(*db, "enroll", "alice", *sorted(demo.glob("alice_ref_*.jpg")), folder=tmp_path),
            "check": imported_by(*db, "check", "alice", demo / "alice_genuine.jpg", folder=tmp_path)}
    assert "edge_verify.edge.cli" in runs["--help"] and "ai_edge_litert.interpreter" in runs["check"]
    assert {command: sorted(filter(forbidden, modules)) for command, modules in runs.items()} == {
        command: [] for command in runs}


def test_the_workstation_commands_are_registered_from_outside_edge_and_load_when_named():
    registered = registered_commands()
    assert set(registered) == {"train", "evaluate", "evaluate-omniglot", "convert", "bench"}
    assert all(point.value.startswith(WORKSTATION) for point in registered.values())
    listing = CliRunner().invoke(main, ["--help"]).stdout
    assert "Workstation commands" in listing and "evaluate-omniglot, train" in listing
    result = CliRunner().invoke(main, ["convert", "--help"])
    assert result.exit_code == 0 and "--calib" in result.stdout


@pytest.mark.skipif(os.environ.get("EDGE_VERIFY_SUITE") != "device",
                    reason="only in the device install's run of the suite (make test)")
def test_the_device_install_runs_without_tensorflow():
    assert [name for name in TENSORFLOW if importlib.util.find_spec(name)] == []
