"""The exact shape of every JSON reply of the API, as pydantic models: the OpenAPI schema is generated from them.

WHY strict models rather than ``dict[str, Any]``: an open object in the schema tells a client nothing, so a client
generated from ``/openapi.json`` gets an untyped blob, and schemathesis' response check has nothing to compare the
reply with. Every model here forbids fields it does not name (``additionalProperties: false``): a reply that grows a
field without its model growing it fails the schema tests instead of reaching clients undocumented (or being
silently dropped by FastAPI's response filter).

Nullable (``X | None``) only where the server really sends ``null``; a field the server leaves out when it has no
value is declared with :func:`omitted` (absent, never null) and the routes serialise with ``exclude_unset``.

Where the library has a typed result, the reply is that result's JSON validated here, not a shape restated by the
server: the plan replies are ``lookalike.dedupe.plan.Plan.to_dict()`` (the duplicates reply adds each file's id and
thumbnail), the clusters reply is the saved ``ClusterResult`` with paths turned into ids. The models add what a
schema needs (a description, an enum, a range per field); ``tests/test_replies.py`` checks that they name exactly the
typed results' fields, so a field added to a result cannot be forgotten here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, WithJsonSchema
from pydantic import Field as PydanticField

from lookalike.classify import METHODS as CLASSIFY_METHODS
from lookalike.explore import COLORS
from lookalike.explore import METHODS as MAP_METHODS
from lookalike.verify import MATCH, NO_MATCH, UNKNOWN

Mode = Literal["all", "same-class", "other-classes"]
ClassSource = Literal["given", "label", "folder", "predicted"]
ClassifyMethod = Literal[CLASSIFY_METHODS]  # type: ignore[valid-type]
MapMethod = Literal[MAP_METHODS]  # type: ignore[valid-type]
ColorName = Literal[COLORS]  # type: ignore[valid-type]
Verdict = Literal[MATCH, NO_MATCH, UNKNOWN]  # type: ignore[valid-type]
# Spelled here, not imported: importing lookalike.cluster loads scipy (a second) for three tuples of names;
# tests/test_api_schema.py checks they equal the library's KEEP_RULES, DECISION_KINDS and plan actions.
KeepRule = Literal["best", "original", "edited", "oldest", "newest", "largest", "path-order"]
DecisionKind = Literal["not-duplicates", "keep-all"]
GroupAction = Literal["remove-others", "keep-all", "reference-only"]


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def omitted(description: str, **constraints: Any) -> Any:
    """A field the server leaves out when it has no value (never sends it as null): not required, not nullable.

    The ``None`` default only marks it unset (``exclude_unset`` then leaves it out of the reply); an explicit null
    is refused like any other wrong type, and the schema shows no default."""
    return PydanticField(default=None, description=description, json_schema_extra=_no_default, **constraints)


def described(description: str) -> Any:
    return PydanticField(description=description)


def fixed_array(*kinds: str) -> WithJsonSchema:
    """The schema of a fixed-length tuple without ``prefixItems``: the server still checks each position's type.

    WHY: pydantic writes a tuple as ``prefixItems`` (JSON Schema 2020-12), which schemathesis 4.32 turns into a
    draft-4 ``items: [...]`` for its response check and then rejects as an invalid schema, and which common client
    generators (openapi-python-client #965) cannot read. An array of the positions' types with a fixed length is
    read by all of them; the field's description names each position."""
    distinct = list(dict.fromkeys(kinds))
    item = {"type": distinct[0]} if len(distinct) == 1 else {"anyOf": [{"type": k} for k in distinct]}
    return WithJsonSchema({"type": "array", "items": item, "minItems": len(kinds), "maxItems": len(kinds)})


Size = Annotated[tuple[int, int], fixed_array("integer", "integer")]
Point = Annotated[tuple[float, float, float], fixed_array("number", "number", "number")]
KeypointPair = Annotated[
    tuple[float, float, float, float, bool], fixed_array("number", "number", "number", "number", "boolean")
]


class Reply(BaseModel):
    """Every reply model: fields it does not name are an error, so the schema says ``additionalProperties: false``."""

    model_config = ConfigDict(extra="forbid")


# --- images, search, classify ---------------------------------------------------------------------------------------


class IndexedImage(Reply):
    """An image of the index, by id, with the URLs of its thumbnail and its original file."""

    id: int = described("The image's id in this index (0 to images - 1).")
    name: str = described("Its path relative to the indexed folder.")
    label: str | None = described("Its class (the folder it was indexed from), or null when it has none.")
    thumbnail: str = described("URL of a 256 px JPEG thumbnail.")
    image: str = described("URL of the original file.")


class UploadedQuery(Reply):
    """An uploaded query image: not in the index, so no id, label or URLs; a preview as the server decoded it."""

    id: None = described("Always null: an upload has no id.")
    name: str = described("The uploaded file's name.")
    label: None = described("Always null: an upload has no label.")
    width: int = described("Width in pixels, upright (after the EXIF orientation).")
    height: int = described("Height in pixels, upright.")
    preview: str = described("A small JPEG of the image as decoded, as a data: URL (browsers cannot show HEIC/RAW).")
    same_as: list[int] = omitted(
        "Ids of indexed images with exactly these bytes (left out of the matches); absent when there are none.",
        min_length=1,
    )


class Match(IndexedImage):
    """One look-alike."""

    rank: int = described("1 for the best match.")
    score: float = described("Cosine similarity to the query (-1 to 1), rounded to 6 decimals.")
    inliers: int | None = described(
        "Geometrically verified keypoint matches with the query when re-ranked; null without re-ranking or when "
        "the pair could not be verified (too few keypoints)."
    )
    folded: list[int] = omitted(
        "Collapsed searches (collapse=true): ids of this photo's copies among the hits, folded into this match (its "
        "keeper); empty when it has none; absent when the search was not collapsed."
    )


class Prediction(Reply):
    """A class prediction: the most probable class and the probability of every class."""

    label: str = described("The most probable class.")
    probabilities: dict[str, float] = described("Every class's probability (they sum to 1).")
    method: ClassifyMethod = described("What predicted it: the fitted head (linear, mlp) or a kNN vote.")


class AppliedFilter(Reply):
    """The search filter as the server understood it: only the fields that were set."""

    after: str = omitted("Taken on or after this local time, ISO 8601 (2023-01-01T00:00:00).")
    before: str = omitted("Taken on or before this local time, ISO 8601 (a bare date means its end).")
    near: Point = omitted("Within radius of a point: [latitude, longitude, radius in km].")
    path: str = omitted("Relative path matches this glob.")
    label: str = omitted("Only images with this label.")
    min_score: float = omitted("Matches scoring below this cosine were left out.")


class SearchReply(Reply):
    """The look-alikes of a query, best first, and what the search did."""

    query: IndexedImage | UploadedQuery = described("The query: an indexed image (by id) or the upload.")
    mode: Mode = described("all, same-class or other-classes.")
    k: int = described("How many matches were asked for.")
    rerank: int = described("Re-ranking depth by geometric verification (0 = off).")
    collapse: bool = omitted("Whether copies among the hits were folded into one match each (absent when not).")
    query_class: str | None = described("The class a class mode searched in or outside of; null in mode all.")
    class_source: ClassSource | None = described(
        "Where query_class came from: given (the class field), label (the indexed image's), folder or predicted; "
        "null in mode all."
    )
    filter: AppliedFilter | None = described("The filter applied, or null when none was given.")
    note: str | None = described("Why there are fewer than k matches (a filter nothing passes), else null.")
    matches: list[Match] = described("Up to k look-alikes, best first (re-ranked ones: verified first).")
    prediction: Prediction | None = described("The query's class, or null when this index cannot classify.")
    seconds: float = described("Server time for decode, model, search, re-rank and classify.")


class ClassifyReply(Prediction):
    """The class of a query image, with per-class probabilities."""

    query: IndexedImage | UploadedQuery = described("The query: an indexed image (by id) or the upload.")


class MatchesReply(Reply):
    """The geometric verdict on two indexed images and their tentative keypoint matches."""

    a: int = described("Id of the first image.")
    b: int = described("Id of the second image.")
    size_a: Size = described("[width, height] of the first image in pixels.")
    size_b: Size = described("[width, height] of the second image in pixels.")
    status: Verdict = described("match, no-match, or unknown when an image has too few keypoints to judge.")
    inliers: int = described("Matches consistent with one geometric transform.")
    tentative: int = described("Keypoint matches before the geometric check.")
    matches: list[KeypointPair] = described(
        "Rows [xa, ya, xb, yb, inlier]: a keypoint in each image (own pixels, 0.1 px; four numbers) and whether "
        "the pair is an inlier (a boolean)."
    )


# --- clusters -------------------------------------------------------------------------------------------------------


class ClusterGps(Reply):
    """Where a cluster's GPS-tagged photos were taken."""

    lat: float = described("Latitude of their centre.")
    lon: float = described("Longitude of their centre.")
    count: int = described("How many of the cluster's photos have a GPS position.")


class Cluster(Reply):
    """One cluster of the last `lookalike cluster` run, as ids of this index."""

    id: int = described("The cluster's number (for its contact sheet: /api/clusters/{id}/sheet.png).")
    size: int = described("How many of its images are in the index now.")
    ids: list[int] = described("Its images' ids.")
    labels: dict[str, int] = described("How many of its images carry each label, most common first.")
    gps: ClusterGps | None = described("The centre of its GPS-tagged photos, or null when none is tagged.")


class ClusterMetrics(Reply):
    """Figures of the clustering run; each is left out when the run did not compute it."""

    images: int = omitted("Images clustered.")
    clusters: int = omitted("Clusters found.")
    clustered: int = omitted("Images in some cluster.")
    noise: int = omitted("Images in none.")
    seconds: float = omitted("Time the run took.")
    ari: float = omitted("Adjusted Rand index against the labels.")
    nmi: float = omitted("Normalised mutual information against the labels.")
    homogeneity: float = omitted("Homogeneity against the labels.")
    completeness: float = omitted("Completeness against the labels.")


class ClustersReply(Reply):
    """The index's saved clustering; available false (and empty lists) when `lookalike cluster` has not run."""

    available: bool = described("Whether a clustering of this index is stored.")
    clusters: list[Cluster] = described("The clusters, in the run's order.")
    noise: list[int] = described("Ids of images in no cluster.")
    metrics: ClusterMetrics = described("The run's figures.")


# --- duplicates -----------------------------------------------------------------------------------------------------


class FileFacts(Reply):
    """What choosing the keeper looked at for one file."""

    name: str = described("The file's path relative to the indexed folder.")
    width: int = described("Width in pixels.")
    height: int = described("Height in pixels.")
    size: int = described("File size in bytes.")
    sharpness: float = described("Variance of the Laplacian of Gaussian of the central crop (higher = sharper).")
    exposure: float = described("1 minus the fraction of clipped (blown-out or crushed) pixels.")
    exif_time: str | None = described("EXIF capture time (ISO 8601), or null when the file has none.")
    gps: bool = described("Whether the file carries a GPS position.")
    camera: bool = described("Whether the file names its camera (EXIF make/model).")
    time: str = described("The capture time used for ordering: EXIF, else the file's modification time.")
    format: str = described("File format family: raw, heic, avif, png, jpeg, webp, tiff or other.")
    editor: str | None = described("The EXIF Software of an editor (an edited copy), or null.")
    camera_name: str | None = described("EXIF camera make and model, or null.")
    mtime: str = described("The file's modification time (ISO 8601).")


class PlanFile(Reply):
    """One file of a copy group, as it was when the plan was made (applying refuses a file changed since)."""

    path: str = described("Relative to the indexed folder.")
    role: Literal["keep", "remove"] = described("What applying the plan does with it.")
    size: int = described("Size in bytes.")
    mtime_ns: int = described("Modification time, nanoseconds since the epoch.")
    hash: str = described("Content hash.")
    facts: FileFacts = described("What the keeper choice looked at.")


class PlanGroup(Reply):
    """One group of copies: the keeper first, then the others."""

    id: int = described("The group's number in this plan (1, 2, ...).")
    action: GroupAction = described(
        "remove-others; keep-all when a person decided to keep them all; reference-only when every file is under a "
        "reference folder (reported, never acted on)."
    )
    keeper: str = described("Path of the copy kept.")
    why: str = described("Why that copy was chosen (or: chosen by hand).")
    min_score: float = described("Lowest cosine between two of its copies.")
    max_score: float = described("Highest cosine between two of its copies.")
    files: list[PlanFile] = described("Its files, the keeper first.")


class PlanSettings(Reply):
    """How the copies were found."""

    threshold: float = described("Cosine above which a pair is a candidate copy.")
    pixel: float = described("Aligned pixel correlation at or above which a candidate is a copy.")
    k: int = described("Neighbours looked at per image.")
    prefer_formats: list[str] = omitted("File formats best first, when not the default order.")
    raw_jpeg: Literal["duplicates"] = omitted("RAW+JPEG siblings treated as copies (absent: kept as one shot).")
    reference: list[str] = omitted("Reference folders (relative to the photo folder): nothing under them is removed.")
    prefer: list[str] = omitted("Folders whose copies win the keeper choice, first given first.")
    path: str = omitted("The glob limiting which photos were looked at.")


class PlanSummary(Reply):
    """What applying the plan would do."""

    groups: int = described("Groups of copies.")
    kept_all: int = described("Groups a person decided to keep whole.")
    remove: int = described("Files that would be removed.")
    bytes: int = described("Bytes those files take.")


class Plan(Reply):
    """A dedupe plan (dry run): the file `lookalike dedupe --apply` takes. Nothing moved when it was made."""

    lookalike_plan: int = described("The plan format version.")
    id: str = described("This plan's unique id (its journal is named after it).")
    created: str = described("When it was made, ISO 8601 UTC.")
    index: str = described("The index folder it was made for.")
    root: str = described("The indexed photo folder.")
    index_created: str | None = described("When that index was created (a rebuilt index refuses the plan).")
    keep: KeepRule = described("The rule that chose the keepers.")
    settings: PlanSettings = described("How the copies were found.")
    groups: list[PlanGroup] = described("The groups of copies.")
    summary: PlanSummary = described("What applying it would do.")
    notes: list[str] = described("Files left out and why.")
    reference: list[str] = omitted("Reference folders of this plan; absent when there are none.")


class DuplicateFile(PlanFile):
    """A file of a copy group, with its id and thumbnail for the page."""

    id: int = described("The image's id in this index.")
    thumbnail: str = described("URL of its thumbnail.")


class DuplicateGroup(PlanGroup):
    """A group of copies, its files with ids."""

    files: list[DuplicateFile] = described("Its files, the suggested keeper first.")


class DuplicatesReply(Plan):
    """The current dry-run plan with ids for the page (POST /api/duplicates/plan downloads it as a file)."""

    groups: list[DuplicateGroup] = described("The groups of copies.")


class DecisionReply(Reply):
    """A remembered decision (saved in the index, by content hash)."""

    kind: DecisionKind = described("not-duplicates or keep-all.")
    names: list[str] = described("The images it is about, relative to the indexed folder.")


# --- the map --------------------------------------------------------------------------------------------------------


class MapInfo(Reply):
    """How the stored map was made; a field is left out when the map file does not record it (older maps)."""

    seed: int = omitted("Random seed of the layout.")
    pca_dims: int = omitted("Dimensions kept by PCA before the layout.")
    seconds: float = omitted("Time the layout took.")
    created: str = omitted("When it was made, ISO 8601 UTC.")
    count: int = omitted("Points in it.")
    suspects_checked: bool = omitted("Whether suspect labels were looked for.")


class Coloring(Reply):
    """One way to colour the map: the legend of its codes in the points block."""

    legend: list[str] = described(
        "Code i (1-based) means legend[i - 1]; 0 means none. For a ramp, codes 1-255 are steps between the legend's "
        "two ends: time [earliest, latest] capture time; uniqueness [0, 1] (empty until `lookalike unique` ran)."
    )
    kind: Literal["ramp", "categories"] = described("ramp (time, uniqueness) or categories.")


class Colorings(Reply):
    """Every colouring of the map, by name."""

    label: Coloring
    cluster: Coloring
    folder: Coloring
    time: Coloring
    uniqueness: Coloring


class MapPoints(Reply):
    """Where and how the map's points are sent (binary, not JSON: 100,000 points would be megabytes of JSON)."""

    url: str = described("URL of the binary block (GET).")
    bytes: int = described("Its length in bytes.")
    layout: list[str] = described("What follows what in the block.")
    order: list[ColorName] = described("The colourings' code arrays, in block order after the float32 x,y.")


class MapReply(Reply):
    """The stored map of the collection."""

    available: Literal[True] = described("A current map is stored.")
    count: int = described("Points: one per image, in id order.")
    method: MapMethod = described("The layout method.")
    color: ColorName = described("The colouring chosen when the map was made.")
    info: MapInfo = described("How it was made.")
    colorings: Colorings = described("Legends of every colouring.")
    suspects: list[int] = described("Ids of labelled images whose label the rest of the data contradicts.")
    suspects_checked: bool = described("Whether suspects were looked for (false: the list is empty unchecked).")
    points: MapPoints = described("The binary block of points and colour codes.")


class NoMapReply(Reply):
    """No map to show, and why."""

    available: Literal[False] = described("No current map is stored.")
    reason: str = described("Why, and the command that makes one.")
    count: int = described("Images in the index.")


class SelectionReply(Reply):
    """The files of a selection of image ids."""

    ids: list[int] = described("The ids, as sent.")
    paths: list[str] = described("Their absolute file paths on the server, in the same order.")


class HealthReply(Reply):
    """Liveness, and what this index offers."""

    status: Literal["ok"] = described("Always ok when the server answers.")
    images: int = described("Images in the index.")
    model: str = described("The embedding model's name.")
    classes: list[str] = described("The index's classes (labels), sorted; empty when it has none.")
    classify: bool = described("Whether the index can classify (two or more classes).")
    clusters: bool = described("Whether a clustering is stored (GET /api/clusters).")
    map: bool = described("Whether a current map is stored (GET /api/map).")
    modes: list[Mode] = described("The search modes.")
    max_k: int = described("The most matches one search returns.")
    formats: list[str] = described("File extensions the server reads, sorted (.jpg, .heic, .dng, ...).")
    commit: int = described(
        "The index commit this reply was served from (also the X-Lookalike-Commit header of every reply); it goes "
        "up when the index is updated, and the server follows within a second."
    )


class ErrorBody(Reply):
    """Every error the API returns: one line saying what went wrong and what to do."""

    error: str = described("What went wrong and what to do, in one line.")
