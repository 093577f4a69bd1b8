"""The device benchmark runs end to end and reports every figure (speed is printed, never asserted)."""
import json

from edge_verify.tools.benchmark import TARGETS, main


def test_quick_benchmark_reports_every_figure(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "bench.json"
    main(["--model", str(tiny_bundle), "--quick", "--json", str(out)])
    report = json.loads(out.read_text())
    figures = report["figures"]
    assert set(figures) == set(TARGETS)
    assert all(isinstance(value, (int, float)) and value > 0 for value in figures.values()), figures
    assert report["model"]["embedding_size"] == 32
    table = capsys.readouterr().out
    assert "--quick" in report["command"] and report["command"] in table
    for label, *_ in TARGETS.values():
        assert label in table
