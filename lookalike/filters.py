"""Search filters: which indexed images a search may return, from what the index already knows of each image.

One definition (:class:`SearchFilter`) serves the CLI, the API and :meth:`lookalike.index.Index.search`. Row filters
(capture time, distance from a point, a path glob, a label) become an allow-list of ids that FAISS searches inside
(an ID selector, see :class:`lookalike.search.VectorSearch`), so ``k=20`` still returns 20 matches when 20 pass;
filtering the top-k afterwards would return fewer, or none, for a selective filter. ``min_score`` is the one filter
applied to the results: it depends on the query.

A filter that nothing passes is not an error: :meth:`SearchFilter.select` says which clause emptied the set, so a
user learns "no GPS-tagged image within 0.5 km" rather than staring at an empty list.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa  # only the type: the CLI takes its filter options' help from here without loading it

EARTH_RADIUS_KM = 6371.0088


def _parse_time(value: Any, setting: str, *, end_of_day: bool) -> datetime:
    """A date or date-time; a bare date given as ``before`` means the end of that day (both ends are inclusive)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, date):
        start = datetime(value.year, value.month, value.day)
        return start + timedelta(days=1) - timedelta(microseconds=1) if end_of_day else start
    text = str(value).strip()
    try:
        if len(text) == 10:
            return _parse_time(date.fromisoformat(text), setting, end_of_day=end_of_day)
        return datetime.fromisoformat(text).replace(tzinfo=None)
    except ValueError:
        raise ConfigError(
            f"{setting} must be a date (2023-12-31) or date-time (2023-12-31T18:00), got {text!r}", setting=setting
        ) from None


def _parse_near(value: Any) -> tuple[float, float, float]:
    parts = [p.strip() for p in value.split(",")] if isinstance(value, str) else list(value)
    try:
        if len(parts) != 3:
            raise ValueError
        lat, lon, km = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise ConfigError(
            f"near must be latitude,longitude,radius in km (48.8867,2.3431,0.5), got {value!r}", setting="near"
        ) from None
    if not (np.isfinite(lat) and -90.0 <= lat <= 90.0):
        raise ConfigError(f"near: latitude must be between -90 and 90, got {lat}", setting="near")
    if not (np.isfinite(lon) and -180.0 <= lon <= 180.0):
        raise ConfigError(f"near: longitude must be between -180 and 180, got {lon}", setting="near")
    if not (np.isfinite(km) and km > 0):
        raise ConfigError(f"near: the radius must be a positive number of km, got {km}", setting="near")
    return lat, lon, km


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A path glob as a regex over index names (paths relative to the photo folder, ``/``-separated).

    ``*`` and ``?`` stay inside one folder, ``**`` crosses folders (``site-a/**`` is everything under site-a,
    ``**/*.png`` every PNG), ``[abc]`` is a set, ``{a,b}`` alternatives. wcmatch does the translation (the standard
    library's ``fnmatch`` lets ``*`` cross folders, and its ``glob.translate`` needs Python 3.13).
    """
    from wcmatch import glob

    try:
        include, _ = glob.translate(pattern, flags=glob.GLOBSTAR | glob.BRACE | glob.DOTGLOB)
        return re.compile("|".join(include))
    except (ValueError, re.error) as exc:
        raise ConfigError(f"path: not a usable glob {pattern!r} ({exc})", setting="path") from None


def haversine_km(lat: np.ndarray, lon: np.ndarray, lat0: float, lon0: float) -> np.ndarray:
    """Great-circle distances in km from one point (NaN where a position is missing)."""
    p1, p2 = np.radians(lat), np.radians(lat0)
    dlat, dlon = p1 - p2, np.radians(lon) - np.radians(lon0)
    a = np.sin(dlat / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


_DATE = r"([0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
_TIME = r"T([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?"
_LAT = r"-?(90(\.0*)?|[1-8]?[0-9](\.[0-9]*)?)"
_LON = r"-?(180(\.0*)?|(1[0-7][0-9]|[1-9]?[0-9])(\.[0-9]*)?)"
_KM = r"([0-9]*[1-9][0-9]*(\.[0-9]*)?|[0-9]*\.[0-9]*[1-9][0-9]*)"
_COSINE = r"-?(0(\.[0-9]*)?|\.[0-9]+|1(\.0*)?|[0-9](\.[0-9]*)?[eE]-0*[1-9][0-9]*)"
_WHEN = rf" *({_DATE}({_TIME})?)? *"
_WHEN_TEXT = "a date (2023-12-31) or date-time (2023-12-31T18:00[:00[.000000]])"


@dataclass(frozen=True)
class FilterField:
    """One field of :class:`SearchFilter` as people write it: the CLI option, the API's form field and query
    parameter are all made from these (:data:`FILTER_FIELDS`), and :meth:`SearchFilter.parse` reads them.

    ``written``: the text form the API accepts (a full match over ASCII; blank means unset), which the schema states
    as its ``pattern`` and :meth:`SearchFilter.from_text` checks, so what the schema allows is what is accepted;
    ``written_as`` says it in words. None: any text (a glob, a label)."""

    name: str
    help: str
    example: str
    metavar: str = "TEXT"
    written: str | None = None
    written_as: str | None = None


FILTER_FIELDS: tuple[FilterField, ...] = (
    FilterField("after", "Only photos taken on or after this date (EXIF time).", "2023-01-01", "DATE",
                _WHEN, _WHEN_TEXT),
    FilterField("before", "Only photos taken on or before this date (EXIF time).", "2023-12-31", "DATE",
                _WHEN, _WHEN_TEXT),
    FilterField("near", "Only photos within a radius of a point (EXIF GPS): latitude,longitude,km.",
                "48.8867,2.3431,0.5", "LAT,LON,KM", rf" *({_LAT} *, *{_LON} *, *{_KM})? *",
                "latitude,longitude,radius in km (48.8867,2.3431,0.5)"),
    FilterField("path", "Only paths (relative to the photo folder) matching a glob.", "site-a/**", "GLOB"),
    FilterField("label", "Only images with this label.", "Kitchen", "LABEL"),
    FilterField("min_score", "Leave out matches scoring below this cosine.", "0.6", "COSINE",
                rf" *({_COSINE})? *", "a cosine between -1 and 1 in decimal notation (0.8)"),
)  # fmt: skip
"""The search filter's fields, declared once: CLI options, API form fields and query parameters, and the schema's
patterns. What a pattern cannot say (a real calendar day, ``after`` not later than ``before``, a finite radius) is
:meth:`SearchFilter.parse`'s own error."""
FILTER_FIELD = {f.name: f for f in FILTER_FIELDS}


@dataclass(frozen=True)
class FilterColumns:
    """The per-image columns filters read, converted once per opened index (not per query)."""

    names: np.ndarray  # object array of relative paths
    labels: np.ndarray  # object array, None where unlabelled
    times: np.ndarray  # datetime64[s], NaT where no capture time
    lat: np.ndarray  # float64, NaN where no GPS
    lon: np.ndarray

    @classmethod
    def from_table(cls, table: pa.Table) -> FilterColumns:
        def floats(name: str) -> np.ndarray:
            return table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)

        times = np.array(table.column("exif_time").to_pylist(), dtype="datetime64[s]")
        return cls(
            names=np.array(table.column("path").to_pylist(), dtype=object),
            labels=np.array(table.column("label").to_pylist(), dtype=object),
            times=times,
            lat=floats("gps_lat"),
            lon=floats("gps_lon"),
        )

    def __len__(self) -> int:
        return len(self.names)


#: Decimals of a match's score as the API reports it, and at which ``min_score`` is compared.
SCORE_DECIMALS = 6


@dataclass(frozen=True)
class SearchFilter:
    """What a search may return. Every field is optional; the empty filter allows everything.

    ``after`` / ``before``: capture time (EXIF) range, both ends inclusive; a bare date as ``before`` includes that
    whole day. ``near``: (latitude, longitude, radius km), haversine. ``path``: a glob over paths relative to the
    photo folder. ``label``: one class. Images that lack the field a clause reads (no EXIF time, no GPS, no label)
    do not pass it. ``min_score``: the lowest cosine a match may score, compared at the ``SCORE_DECIMALS`` that
    results report scores with, so a score read off a result and passed back keeps that match (compared unrounded,
    a float32 cosine of 0.8123456 shown as 0.812346 fell below its own shown score and was dropped).
    """

    after: datetime | None = None
    before: datetime | None = None
    near: tuple[float, float, float] | None = None
    path: str | None = None
    label: str | None = None
    min_score: float | None = None

    @classmethod
    def parse(
        cls,
        *,
        after: Any = None,
        before: Any = None,
        near: Any = None,
        path: str | None = None,
        label: str | None = None,
        min_score: Any = None,
    ) -> SearchFilter:
        """Validate user input (strings from a command line or a form, or Python values); empty strings mean unset."""

        def given(v: Any) -> bool:
            return v is not None and not (isinstance(v, str) and not v.strip())

        a = _parse_time(after, "after", end_of_day=False) if given(after) else None
        b = _parse_time(before, "before", end_of_day=True) if given(before) else None
        if a is not None and b is not None and a > b:
            raise ConfigError(f"after ({a:%Y-%m-%d %H:%M}) is later than before ({b:%Y-%m-%d %H:%M})", setting="after")
        score = None
        if given(min_score):
            try:
                score = float(min_score)
            except (TypeError, ValueError):
                raise ConfigError(f"min_score must be a number, got {min_score!r}", setting="min_score") from None
            if not -1.0 <= score <= 1.0:
                raise ConfigError(f"min_score must be a cosine between -1 and 1, got {score}", setting="min_score")
        glob_text = path.strip() if given(path) else None
        if glob_text is not None:
            glob_regex(glob_text)  # refuse a broken pattern now, not at search time
        return cls(
            after=a,
            before=b,
            near=_parse_near(near) if given(near) else None,
            path=glob_text,
            label=label.strip() if given(label) else None,
            min_score=score,
        )

    @classmethod
    def from_text(cls, **values: str | None) -> SearchFilter:
        """:meth:`parse` of text from a form or a URL, each value first checked against its written form
        (:data:`FILTER_FIELDS`): outside it is a ``ConfigError``, with the parser's own reason when it has one."""
        for name, value in values.items():
            form = FILTER_FIELD[name].written
            if value is None or form is None or re.fullmatch(form, value, re.ASCII):
                continue
            cls.parse(**{name: value})  # raises with the precise reason when it has one
            raise ConfigError(f"{name} must be written as {FILTER_FIELD[name].written_as}, got {value!r}", setting=name)
        return cls.parse(**values)

    @property
    def restricts_rows(self) -> bool:
        return any(v is not None for v in (self.after, self.before, self.near, self.path, self.label))

    def __bool__(self) -> bool:
        return self.restricts_rows or self.min_score is not None

    def to_dict(self) -> dict[str, Any]:
        """The filter as JSON-ready values (dates in ISO form), only the fields that are set."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        for k in ("after", "before"):
            if k in d:
                d[k] = d[k].isoformat()
        if "near" in d:
            d["near"] = list(d["near"])
        return d

    def clauses(self) -> list[tuple[str, Any]]:
        """(description, function of FilterColumns -> bool mask) per row clause, in the order they narrow."""
        out: list[tuple[str, Any]] = []
        if self.after is not None or self.before is not None:
            lo = np.datetime64(self.after, "s") if self.after else None
            hi = np.datetime64(self.before, "s") if self.before else None
            span = " and ".join(
                s
                for s in (
                    f"after {self.after:%Y-%m-%d %H:%M}" if self.after else "",
                    f"before {self.before:%Y-%m-%d %H:%M}" if self.before else "",
                )
                if s
            )

            def in_time(c: FilterColumns) -> np.ndarray:
                ok = ~np.isnat(c.times)
                if lo is not None:
                    ok &= c.times >= lo
                if hi is not None:
                    ok &= c.times <= hi
                return ok

            out.append((f"taken {span}", in_time))
        if self.near is not None:
            lat0, lon0, km = self.near

            def near(c: FilterColumns) -> np.ndarray:
                with np.errstate(invalid="ignore"):
                    return haversine_km(c.lat, c.lon, lat0, lon0) <= km  # NaN (no GPS) compares False

            out.append((f"within {km:g} km of {lat0:.5f},{lon0:.5f}", near))
        if self.path is not None:
            regex = glob_regex(self.path)

            under_folders = self.path.endswith("/**") and "**" not in self.path[:-3]

            def in_path(c: FilterColumns) -> np.ndarray:
                if not under_folders:
                    return np.fromiter((regex.fullmatch(n) is not None for n in c.names), bool, len(c.names))
                # "…/**" decides by folder alone: one regex match per folder, not per image (10k images per folder
                # cost one match instead of 10k)
                seen: dict[str, bool] = {}

                def ok(name: str) -> bool:
                    folder = name[: name.rfind("/") + 1]
                    hit = seen.get(folder)
                    if hit is None:
                        hit = seen[folder] = bool(folder) and regex.fullmatch(folder + "x") is not None
                    return hit

                return np.fromiter((ok(n) for n in c.names), bool, len(c.names))

            out.append((f"under {self.path}", in_path))
        if self.label is not None:
            out.append((f"labelled {self.label}", lambda c: c.labels == self.label))
        return out

    def select(self, columns: FilterColumns) -> tuple[np.ndarray | None, str | None]:
        """The ids the row clauses allow (None = no row clause, all allowed) and, if none pass, why.

        The reason names the clause that emptied the set and how many images the earlier ones had left, e.g.
        "no image within 0.5 km of 48.88670,2.34310 (12 of 3,633 taken after 2023-01-01 00:00)".
        """
        clauses = self.clauses()
        if not clauses:
            return None, None
        mask = np.ones(len(columns), bool)
        passed: list[str] = []
        left = len(columns)
        for text, test in clauses:
            mask &= test(columns)
            if not mask.any():
                before = f" ({left:,} of {len(columns):,} {' and '.join(passed)})" if passed else ""
                total = f" among {len(columns):,} images" if not passed else ""
                return np.zeros(0, np.int64), f"no image {text}{total}{before}"
            passed.append(text)
            left = int(mask.sum())
        return np.flatnonzero(mask).astype(np.int64), None
