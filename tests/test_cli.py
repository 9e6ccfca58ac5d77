"""Start-up cost of the command: each command imports only what it uses (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "onnxruntime", "faiss", "pandas", "matplotlib", "sklearn", "scipy", "pyarrow", "ray", "fastapi")
# pydantic too: typer 0.29 converts every option through it (0.1 s a command), which pyproject's typer pin avoids
HEAVY += ("pydantic",)
# and lookalike's own write pipeline extras: a one-off search opens an index and describes one photo, so OpenCV,
# local features, Ray's glue and the VLAD vocabulary fitting stay out (about 0.05 s of a cold search)
HEAVY += ("cv2", "lookalike.verify", "lookalike.distributed", "lookalike.vocab")

PROBE = """
import json, runpy, sys
sys.argv = ["lookalike", *json.loads(sys.argv[1])]
try:
    runpy.run_module("lookalike.cli", run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
with open({out!r}, "w") as fh:
    json.dump({{"code": code, "modules": sorted(m for m in {heavy!r} if m in sys.modules)}}, fh)
"""


def imported_by(args: list[str], tmp_path: Path, cwd: Path | None = None) -> tuple[int, set[str]]:
    """Run ``lookalike ARGS`` in a fresh interpreter; its exit code and which heavy packages it imported."""
    out = tmp_path / "probe.json"
    code = PROBE.format(out=str(out), heavy=HEAVY)
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )
    assert out.is_file(), proc.stderr
    result = json.loads(out.read_text())
    return result["code"], set(result["modules"])


def test_search_with_a_cached_model_imports_no_torch(sample_index, sample_queries: Path, tmp_path: Path) -> None:
    sample_index.search(next(sample_queries.iterdir()))  # the ONNX export is on disk from here on
    query = str(next(sample_queries.iterdir()))
    code, modules = imported_by(["search", query, "--index", str(sample_index.store.path), "--json"], tmp_path)
    assert code in (0, None)
    # what a search needs: the model runtime, the search library and the table reader; nothing else
    assert modules == {"onnxruntime", "faiss", "pyarrow"}


def test_help_and_info_import_no_model_runtime_or_search_library(sample_index, tmp_path: Path) -> None:
    code, modules = imported_by(["--help"], tmp_path)
    assert code in (0, None) and modules == set()
    code, modules = imported_by(["info", "--index", str(sample_index.store.path)], tmp_path)
    assert code in (0, None)
    assert modules == {"pyarrow"}  # the table, to count images and labels


def test_a_file_hash_is_remembered_until_the_file_changes(tmp_path: Path, monkeypatch) -> None:
    import hashlib
    import os

    from lookalike.models import base

    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"a" * 3000)
    first = base.file_hash(weights)
    assert first == hashlib.blake2b(b"a" * 3000, digest_size=16).hexdigest()
    (memo,) = (tmp_path / "cache" / "hashes").iterdir()
    stamp = memo.read_text().partition("\n")[0]
    memo.write_text(f"{stamp}\n{'f' * 32}")  # what a remembered hash looks like to the next call
    assert base.file_hash(weights) == "f" * 32
    st = weights.stat()
    weights.write_bytes(b"b" * 3000)  # same size, other bytes, written later
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert base.file_hash(weights) == hashlib.blake2b(b"b" * 3000, digest_size=16).hexdigest()


def test_a_heic_photo_is_opened_without_registering_its_decoder_first(tmp_path: Path) -> None:
    """pillow-heif is registered when the first HEIC comes, not at import (it cost every command's start-up)."""
    import io

    from PIL import Image

    code = f"""
import io, sys
from PIL import Image
from lookalike.images import decode
assert "pillow_heif" not in sys.modules
img, _ = decode(open({str(tmp_path / "p.heic")!r}, "rb").read(), "p.heic")
print(img.size)
"""
    import pillow_heif

    pillow_heif.register_heif_opener()
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(buf, "HEIF")
    (tmp_path / "p.heic").write_bytes(buf.getvalue())
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(40, 30)"


def test_the_lean_command_line_reads_and_runs_as_the_full_one() -> None:
    """main() builds only the command being run (the others are stand-ins): help and errors must not change."""
    from typer.testing import CliRunner

    from lookalike.cli import _lean, app

    runner = CliRunner()
    for args in (["--help"], [], ["search", "--help"], ["plot", "--help"], ["plot", "tsne", "--help"], ["serch"]):
        full = runner.invoke(app, args)
        lean = runner.invoke(_lean(app, args), args)
        assert (lean.exit_code, lean.output) == (full.exit_code, full.output), args
    listed = runner.invoke(_lean(app, []), ["--help"]).output
    assert all(f" {info.callback.__name__.removesuffix('_cmd').replace('_', '-')} " in listed
               for info in app.registered_commands)  # fmt: skip
