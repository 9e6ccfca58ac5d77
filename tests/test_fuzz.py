"""Fuzzing in the test suite: hypothesis mutates the seed corpus of bench/fuzz.py (small valid images of every format
and mode, with EXIF orientation, time and GPS; detections files) and random bytes through the decoder path and the
detections reader. Nothing but a one-line ``LookalikeError`` may come out. ``bench/fuzz.py`` runs atheris for long;
the inputs it found crashing are replayed here (bench/results/fuzz)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bench.fuzz import check_decode, check_detections, check_raw, seed_corpus  # noqa: E402

SEEDS = seed_corpus()
FOUND = Path(__file__).resolve().parent.parent / "bench" / "results" / "fuzz"


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with a few bytes overwritten, inserted or cut: libFuzzer's basic mutations, driven by hypothesis."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["set", "insert", "cut"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at : at + draw(st.integers(1, 16))]
    return bytes(data)


@pytest.mark.parametrize("seed", range(len(SEEDS["decode"])))
def test_seed_images_decode(seed: int) -> None:
    check_decode(SEEDS["decode"][seed])


@given(data=mutated(SEEDS["decode"]) | st.binary(max_size=512))
def test_decoder_raises_only_lookalike_errors(data: bytes) -> None:
    check_decode(data)


@pytest.mark.parametrize("seed", range(len(SEEDS["raw"])))
def test_seed_raws_decode(seed: int) -> None:
    check_raw(SEEDS["raw"][seed])


@pytest.mark.skipif(not SEEDS["raw"], reason="rawpy is not installed")
@given(data=mutated(SEEDS["raw"] or [b""]) | st.binary(max_size=512))
def test_raw_decoder_raises_only_lookalike_errors(data: bytes) -> None:
    check_raw(data)


@given(data=mutated(SEEDS["detections"]) | st.binary(max_size=256))
def test_detections_reader_raises_only_lookalike_errors(data: bytes) -> None:
    check_detections(data)


@pytest.mark.parametrize(
    "path", sorted(p for p in FOUND.glob("*") if p.suffix != ".log") if FOUND.exists() else [], ids=lambda p: p.name
)
def test_inputs_fuzzing_found_stay_fixed(path: Path) -> None:
    checks = {"decode": check_decode, "raw": check_raw, "detections": check_detections}
    checks[path.name.split("-", 1)[0]](path.read_bytes())
