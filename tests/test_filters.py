"""Search filters against a brute-force reference: generated photos with written EXIF time and GPS (piexif),
every filter clause and their combinations, checked id for id against numpy over the same vectors."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import piexif
import pytest
from PIL import Image

from lookalike.errors import ConfigError
from lookalike.filters import SearchFilter, glob_regex, haversine_km

PARIS = (48.8867, 2.3431)


def _dms(value: float) -> tuple[tuple[int, int], ...]:
    value = abs(value)
    d = int(value)
    m = int((value - d) * 60)
    s = round(((value - d) * 60 - m) * 60 * 1000)
    return ((d, 1), (m, 1), (s, 1000))


def write_photo(src: Path, dst: Path, when: datetime | None, where: tuple[float, float] | None) -> None:
    exif: dict = {"0th": {}, "Exif": {}, "GPS": {}}
    if when is not None:
        exif["Exif"][piexif.ExifIFD.DateTimeOriginal] = when.strftime("%Y:%m:%d %H:%M:%S").encode()
    if where is not None:
        lat, lon = where
        exif["GPS"] = {
            piexif.GPSIFD.GPSLatitudeRef: b"N" if lat >= 0 else b"S",
            piexif.GPSIFD.GPSLatitude: _dms(lat),
            piexif.GPSIFD.GPSLongitudeRef: b"E" if lon >= 0 else b"W",
            piexif.GPSIFD.GPSLongitude: _dms(lon),
        }
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.open(src).convert("RGB").save(dst, "JPEG", quality=90, exif=piexif.dump(exif))


@pytest.fixture(scope="module")
def geo(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """The sample photos spread over two sites, two years and a few km of Paris; some without time or GPS."""
    from lookalike import Index

    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("geo") / "photos"
    truth: dict[str, tuple[datetime | None, tuple[float, float] | None]] = {}
    for i, src in enumerate(sorted(sample_dir.rglob("*.jpg"))):
        site = "site-a" if i % 2 == 0 else "site-b"
        name = f"{src.parent.name}/{site}/{src.name}"  # the label is the top folder
        when = datetime(2022, 6, 1) + timedelta(days=int(rng.integers(0, 700)), seconds=int(rng.integers(0, 86400)))
        where = (PARIS[0] + rng.normal(0, 0.01), PARIS[1] + rng.normal(0, 0.015))
        if i % 7 == 3:
            when = None
        if i % 5 == 1:
            where = None
        write_photo(src, root / name, when, where)
        truth[name] = (when, where)
    index = Index.build(root, root.parent / "idx", labels="folders")
    return index, truth


def reference(index, truth, query_id: int, k: int, f: SearchFilter) -> list[int]:  # noqa: ANN001
    """Brute force: score every other image, keep those the filter allows (decided from the written EXIF)."""
    scores = index.vectors @ index.vectors[query_id]
    keep = []
    for i, name in enumerate(index.names):
        when, where = truth[name]
        if i == query_id:
            continue
        if f.after and (when is None or when < f.after):
            continue
        if f.before and (when is None or when > f.before):
            continue
        if f.near:
            if where is None:
                continue
            lat0, lon0, km = f.near
            p1, p2 = math.radians(where[0]), math.radians(lat0)
            a = (
                math.sin((p1 - p2) / 2) ** 2
                + math.cos(p1) * math.cos(p2) * math.sin(math.radians(where[1] - lon0) / 2) ** 2
            )
            if 2 * 6371.0088 * math.asin(math.sqrt(a)) > km:
                continue
        if f.path and name.split("/")[1] != f.path.split("/")[1]:  # the patterns are "*/SITE/**"
            continue
        if f.label and name.split("/")[0] != f.label:
            continue
        if f.min_score is not None and scores[i] < f.min_score:
            continue
        keep.append(i)
    return sorted(keep, key=lambda i: -scores[i])[:k]


FILTERS = [
    {"after": "2023-01-01"},
    {"after": "2023-01-01", "before": "2023-12-31"},
    {"before": "2022-12-31"},
    {"near": f"{PARIS[0]},{PARIS[1]},1.0"},
    {"near": f"{PARIS[0]},{PARIS[1]},0.6", "after": "2022-09-01"},
    {"path": "*/site-a/**"},
    {"path": "*/site-b/**", "label": "flower"},
    {"label": "temple", "after": "2023-03-01"},
    {"min_score": 0.7},
    {"after": "2022-10-01", "before": "2023-10-01", "near": f"{PARIS[0]},{PARIS[1]},2", "path": "*/site-a/**"},
]


@pytest.mark.parametrize("spec", FILTERS, ids=lambda s: ",".join(s))
def test_filtered_search_matches_brute_force(geo, spec) -> None:  # noqa: ANN001
    index, truth = geo
    f = SearchFilter.parse(**spec)
    for qid in (0, 5, 11):
        for k in (3, 10):
            got = [m.id for m in index.search_many([index.vectors[qid]], k, exclude=[[qid]], where=f)[0].matches]
            assert got == reference(index, truth, qid, k, f), (spec, qid, k)


def test_exif_was_read_and_filters_really_restrict(geo) -> None:  # noqa: ANN001
    """The fixture is only a test if the index holds the written times and positions and filters cut something."""
    index, truth = geo
    cols = index.filter_columns
    assert int((~np.isnat(cols.times)).sum()) == sum(w is not None for w, _ in truth.values())
    assert int(np.isfinite(cols.lat).sum()) == sum(p is not None for _, p in truth.values())
    for spec in FILTERS[:8]:
        allowed, _ = index.allowed_by(SearchFilter.parse(**spec))
        assert 0 < len(allowed) < len(index), spec


def test_k_matches_come_back_when_k_pass(geo) -> None:  # noqa: ANN001
    """Filtering inside the search: k results whenever at least k images pass, not k minus the filtered ones."""
    index, _ = geo
    f = SearchFilter.parse(path="*/site-b/**")
    allowed, _ = index.allowed_by(f)
    k = len(allowed) - 1
    res = index.search_many([index.vectors[0]], k, exclude=[[0]], where=f)[0]
    assert len(res.matches) == k
    assert all(m.name.split("/")[1] == "site-b" for m in res.matches)


def test_empty_filter_says_why_not_error(geo) -> None:  # noqa: ANN001
    index, _ = geo
    res = index.search_many([index.vectors[0]], 5, where=SearchFilter.parse(near="10,10,1"))[0]
    assert res.matches == [] and "within 1 km" in res.note
    res = index.search_many([index.vectors[0]], 5, where=SearchFilter.parse(after="2023-01-01", path="nowhere/**"))[0]
    assert res.matches == [] and "under nowhere/**" in res.note and "taken after 2023-01-01" in res.note
    res = index.search_many([index.vectors[0]], 5, where=SearchFilter.parse(min_score=1.0), exclude=[[0]])[0]
    assert res.matches == [] and "scores at least 1" in res.note
    res = index.search_many([index.vectors[0]], 5, where=SearchFilter.parse(label="Attic"))[0]
    assert res.matches == [] and "labelled Attic" in res.note


@pytest.mark.parametrize(
    ("spec", "setting"),
    [
        ({"after": "yesterday"}, "after"),
        ({"before": "2023-13-01"}, "before"),
        ({"after": "2024-01-01", "before": "2023-01-01"}, "after"),
        ({"near": "91,2,1"}, "near"),
        ({"near": "48,181,1"}, "near"),
        ({"near": "48,2"}, "near"),
        ({"near": "48,2,-1"}, "near"),
        ({"near": "a,b,c"}, "near"),
        ({"min_score": "high"}, "min_score"),
        ({"min_score": 1.5}, "min_score"),
    ],
)
def test_malformed_values_are_one_line_config_errors(spec, setting) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError) as exc:
        SearchFilter.parse(**spec)
    assert exc.value.setting == setting and "\n" not in str(exc.value)


def test_parse_semantics() -> None:
    f = SearchFilter.parse(after="2023-01-01", before="2023-12-31", near=" 48.8867, 2.3431, 0.5", path="", label=" ")
    assert f.after == datetime(2023, 1, 1) and f.before == datetime(2023, 12, 31, 23, 59, 59, 999999)
    assert f.near == (48.8867, 2.3431, 0.5) and f.path is None and f.label is None
    assert (
        not SearchFilter.parse()
        and SearchFilter.parse(min_score=0.5)
        and not SearchFilter.parse(min_score=0.5).restricts_rows
    )
    assert bool(glob_regex("site-a/**").fullmatch("site-a/x/y.jpg")) and not glob_regex("site-a/*").fullmatch(
        "site-a/x/y.jpg"
    )
    d = haversine_km(np.array([48.8867, np.nan]), np.array([2.3431 + 0.01, 0.0]), *PARIS)
    assert abs(d[0] - 0.7326) < 0.01 and np.isnan(d[1])


def test_cli_filters(geo, capsys) -> None:  # noqa: ANN001
    import json

    from typer.testing import CliRunner

    from lookalike.cli import app

    index, _ = geo
    q = str(index.paths[0])
    r = CliRunner().invoke(app, ["search", q, "-i", str(index.store.path), "-k", "4", "--path", "*/site-b/**",
                                 "--after", "2022-01-01", "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(got["matches"]) == 4 and all(m["name"].split("/")[1] == "site-b" for m in got["matches"])
    assert got["filter"] == {"after": "2022-01-01T00:00:00", "path": "*/site-b/**"}


@pytest.mark.parametrize(
    "pattern", ["site-a/**", "*/0001/**", "site-a/00*/**", "**/img_1.jpg", "{site-a,top}/**", "*.jpg"]
)
def test_path_filter_by_folder_agrees_with_the_glob(pattern: str) -> None:
    """Patterns ending in /** are decided once per folder; the result must be the glob's, path by path."""
    from lookalike.filters import FilterColumns

    names = ["top.jpg", "site-a/x.jpg", "site-ab/y.jpg", "site-a/0001/img_1.jpg", "site-b/0001/img_1.jpg",
             "site-a/0002/deep/img_2.jpg", "top/site-a/img_3.jpg", "site-a.jpg"]  # fmt: skip
    n = len(names)
    cols = FilterColumns(
        names=np.array(names, dtype=object), labels=np.array([None] * n, dtype=object),
        times=np.array([None] * n, dtype="datetime64[s]"), lat=np.full(n, np.nan), lon=np.full(n, np.nan),
    )  # fmt: skip
    ids, _ = SearchFilter.parse(path=pattern).select(cols)
    regex = glob_regex(pattern)
    assert ids.tolist() == [i for i, name in enumerate(names) if regex.fullmatch(name)]
