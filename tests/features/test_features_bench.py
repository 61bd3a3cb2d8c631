"""The benchmark script stays runnable (its figures are printed, never asserted)."""

from features import bench_features


def test_bench_runs_on_a_tiny_workload(capsys):
    bench_features.main(["--businesses", "2", "--events", "40", "--reads", "4"])
    out = capsys.readouterr().out
    for label in ("update", "extract_into", "to_bytes", "from_bytes", "bytes/business", "[spread]", "[burst]"):
        assert label in out
