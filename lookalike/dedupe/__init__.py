"""Copies: finding near-duplicates (checked pixel for pixel), choosing which copy to keep, plans (dry runs),
applying them with a journal, resuming, undoing, new photos against an index, decisions a person made, burst series.

Modules, by concern:

- ``copies``: near-duplicate groups and burst series; ``pixels``: the pixel check that tells copies from other
  photos; ``orientations``: rotated and mirrored copies (turned descriptions, checked in their turn);
- ``formats``: camera originals over conversions, RAW+JPEG siblings, edits, reference folders, ``--path``: one
  settings object (``DedupeSettings``);
- ``keep``: which copy to keep (resolution, sharpness, file size, EXIF, age) and why;
- ``plan``: the plan and the journal as typed records (``Plan``, ``Journal``) and their JSON;
- ``actions``: plans (dry runs), applying them with a journal, resuming, undoing;
- ``decisions``: "not duplicates" / "keep all", remembered by content hash; ``incoming``: new photos vs an index.

The names below are the public API; import them from ``lookalike.dedupe``. Clustering (``lookalike.cluster``) sits
above this package and respects its "not duplicates" decisions.
"""

from lookalike.dedupe.actions import (
    APPLY_MODES,
    apply_mode,
    apply_plan,
    build_plan,
    load_plan,
    make_plan,
    save_plan,
    undo_plan,
)
from lookalike.dedupe.copies import (
    DEDUPE_FLOOR,
    DEDUPE_PIXEL,
    SERIES_FLOOR,
    SERIES_SECONDS,
    burst_series,
    candidate_pairs,
    index_duplicates,
    near_duplicates,
)
from lookalike.dedupe.decisions import DECISION_KINDS, Decisions, decide
from lookalike.dedupe.formats import DedupeSettings, are_siblings, format_of
from lookalike.dedupe.incoming import check_new
from lookalike.dedupe.keep import KEEP_RULES, FileFacts, choose_keeper, facts_of
from lookalike.dedupe.plan import Journal, JournalStep, Plan, PlanFile, PlanGroup, PlanSummary

__all__ = [
    "APPLY_MODES",
    "DECISION_KINDS",
    "DEDUPE_FLOOR",
    "DEDUPE_PIXEL",
    "KEEP_RULES",
    "SERIES_FLOOR",
    "SERIES_SECONDS",
    "Decisions",
    "DedupeSettings",
    "FileFacts",
    "Journal",
    "JournalStep",
    "Plan",
    "PlanFile",
    "PlanGroup",
    "PlanSummary",
    "apply_mode",
    "apply_plan",
    "are_siblings",
    "build_plan",
    "burst_series",
    "candidate_pairs",
    "check_new",
    "choose_keeper",
    "decide",
    "facts_of",
    "format_of",
    "index_duplicates",
    "load_plan",
    "make_plan",
    "near_duplicates",
    "save_plan",
    "undo_plan",
]
