"""Do label suspects find the wrong folder labels? `label_suspects` on the rooms photos, against an audit by eye.

The held-out fifth's 64 kNN mistakes of one fine-tuned model were each looked at by eye
(bench/results/rooms-errors-audit.json): wrong folder label, two room types in one photo, or a plain model mistake.
Here every rooms photo is judged out-of-fold (5 folds, logistic-regression probe) on the untrained Lite2 GeM
features at 384 px (what ``lookalike train --drop-suspects`` uses), and the photos flagged in the held-out fifth are
compared with that audit at several thresholds. Photos the model got right were never audited, so a flagged photo
outside the audit is counted as such, not as a false alarm.

    flock /tmp/lookalike-bench.lock .venv/bin/python -m bench.suspects
"""

from __future__ import annotations

import os

os.environ.setdefault("LOOKALIKE_CACHE", "/tmp/lookalike-cache")

import json  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from bench.report import markdown_table, write_section  # noqa: E402
from bench.train import AUDIT, _files, pooled, split  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "suspects.json"
THRESHOLDS = (0.05, 0.1, 0.2, 0.3)
VERDICTS = ("label wrong", "both rooms shown", "model wrong")


def main() -> None:
    from lookalike.evaluate import label_suspects

    files = _files("rooms")
    tr, te = split(files)
    allf = tr + te
    x = np.concatenate([pooled(tr, 384, "efficientnet-lite2"), pooled(te, 384, "efficientnet-lite2")])
    labels = [c for _, c in allf]
    root = files[0][0].parents[1]
    audit = json.loads(AUDIT.read_text())
    verdict = {str(root / e["file"]): e["verdict"] for e in audit["errors"]}
    held = {str(p) for p, _ in te}
    rows = []
    for below in THRESHOLDS:
        t0 = time.perf_counter()
        found = label_suspects(x, labels, below=below)
        secs = time.perf_counter() - t0
        paths = [str(allf[s["row"]][0]) for s in found]
        in_held = [p for p in paths if p in held]
        n = Counter(verdict.get(p, "not audited") for p in in_held)
        rows.append({"below": below, "flagged": len(found), "flagged_heldout": len(in_held), "seconds": secs,
                     **{v: n[v] for v in (*VERDICTS, "not audited")}})  # fmt: skip
        print(rows[-1], flush=True)
    total = Counter(verdict.values())
    RESULTS.write_text(json.dumps({"rows": rows, "audited": dict(total), "n": len(allf)}, indent=1))
    table = markdown_table(
        ["p(own label) below", "flagged (of all 3,633)", "flagged in held-out fifth", "wrong label (of "
         f"{total['label wrong']})", f"two room types (of {total['both rooms shown']})",
         f"model mistake (of {total['model wrong']})", "not audited", "seconds"],
        [[f"{r['below']:g}", r["flagged"], r["flagged_heldout"], r["label wrong"], r["both rooms shown"],
          r["model wrong"], r["not audited"], f"{r['seconds']:.1f}"] for r in rows],
    )  # fmt: skip
    write_section(
        "suspects",
        "## Label suspects (`lookalike suspects`, `train --drop-suspects`)\n\n"
        "Every rooms photo judged out-of-fold (5 folds, logistic-regression probe on the untrained Lite2 GeM "
        "features at 384 px); the flagged photos of the held-out fifth set against the audit by eye of one "
        "fine-tuned model's 64 held-out mistakes (`bench/results/rooms-errors-audit.json`). Photos that model got "
        "right were not audited.\n\n" + table,
        {
            "model": "efficientnet-lite2 (untrained)",
            "pooling": "gem",
            "resolution": "384 px",
            "data": f"rooms, {len(allf):,} images",
            "probe": "logistic regression, 5 folds",
            "thresholds": ", ".join(f"{t:g}" for t in THRESHOLDS),
        },
    )


if __name__ == "__main__":
    main()
