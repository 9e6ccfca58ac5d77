"""Crash-point tests (bench/crashpoints.py): each writing command killed with SIGKILL at write steps spread over its
run; the index must open with ``info`` consistent, and re-running the command must leave exactly what a never-killed
run leaves. Three points per command here (first, middle, last write), two for the newer writers (map, features,
dedupe apply, a decision); ``python -m bench.crashpoints`` tries every step, and the fp32 and photo-calibrated indexes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.crashpoints import check, commands, make_photos, run_cli, run_command


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The ONNX export cache is written once before any step is counted (else the first run has extra steps)."""
    work = tmp_path_factory.mktemp("warm")
    make_photos(work / "photos", 1)
    check(
        run_cli(["index", str(work / "photos"), "--index", str(work / "idx"), "--quiet", "--resolution", "64"]), "warm"
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["index", "fit", "vocab fit", "cluster --export"])
def test_killed_at_any_write_resumes_to_the_same_result(warm: None, tmp_path: Path, name: str) -> None:
    cmd = next(c for c in commands(photos_per_class=2) if c.name == name)
    outcome = run_command(cmd, tmp_path, points=3)  # first, middle and last step
    assert outcome.steps >= 3 and len(outcome.tried) == 3
    assert outcome.failures == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["map", "features", "dedupe apply", "dedupe decide not-duplicates"])
def test_newer_writers_killed_at_their_first_and_last_write(warm: None, tmp_path: Path, name: str) -> None:
    """The writers that came later, at two points each (the bench tries every step, and the fp32 and photo-calibrated indexes)."""
    cmd = next(c for c in commands(photos_per_class=2) if c.name == name)
    outcome = run_command(cmd, tmp_path, points=2)
    assert outcome.steps >= 2 and len(outcome.tried) == 2
    assert outcome.failures == []


@pytest.mark.slow
def test_dedupe_apply_killed_while_updating_the_index_finishes_it(warm: None, tmp_path: Path) -> None:
    """Found by the bench: killed after the journal said "applied", while the index was being updated (its last six
    write steps: table, skip list, header), the re-run returned "already applied" and left moved files in the index
    or a stale count."""
    from bench.crashpoints import prepare_command, trial

    cmd = next(c for c in commands(photos_per_class=2) if c.name == "dedupe apply")
    base, steps, reference, volatile = prepare_command(cmd, tmp_path)
    for step in (steps - 5, steps - 2):  # the table in place; the header written
        assert trial(cmd, base, tmp_path / "trial", step, reference, volatile) is None


def test_crash_hook_kills_at_the_asked_step_and_traces(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("from lookalike.io import atomic_write\n"
            "for i in range(5): atomic_write(f'{sys.argv[1]}/f{i}.txt', str(i))\n")  # fmt: skip
    env = {"LOOKALIKE_CRASH_AT": "4", "LOOKALIKE_WRITE_TRACE": str(tmp_path / "trace")}
    import os

    proc = subprocess.run([sys.executable, "-c", "import sys\n" + code, str(tmp_path)], env={**os.environ, **env})
    assert proc.returncode == -9
    trace = (tmp_path / "trace").read_text().splitlines()
    assert [t.split()[1] for t in trace] == ["written", "renamed", "written", "renamed"]
    assert sorted(p.name for p in tmp_path.glob("f*.txt")) == ["f0.txt", "f1.txt"]  # f1 renamed, then killed
    assert len(list(tmp_path.glob(".f*.tmp"))) == 0


def test_stale_temp_files_are_removed_by_the_next_write(tmp_path: Path) -> None:
    import os

    from lookalike.io import atomic_write

    stale = tmp_path / ".head.json.abc123.tmp"  # what a killed write of head.json leaves
    stale.write_text("half")
    os.utime(stale, (1, 1))
    young = tmp_path / ".head.json.zzz999.tmp"  # a write in progress in another process, started after this one
    young.write_text("in progress")
    atomic_write(tmp_path / "head.json", "{}")
    assert not stale.exists() and young.exists()
