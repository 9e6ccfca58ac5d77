"""The read side: the view tasks take (lookalike.view), the one query path (lookalike.query), typed info and pairs."""

from __future__ import annotations

import re
from pathlib import Path

import grimp
import numpy as np

from lookalike import query
from lookalike.verify import VerifiedPair
from lookalike.view import IndexInfo, IndexView, IndexWriter

LOOKALIKE = Path(__file__).resolve().parents[1] / "lookalike"
TASKS = ("classify", "cluster", "evaluate", "explore", "scenes", "training", "vocab", "distributed", "verify")
TASKS += ("leaks", "uniqueness")  # the leak check and uniqueness take the view too


def _members(protocol: type) -> set[str]:
    names: set[str] = set()
    for cls in protocol.__mro__:
        if cls.__module__ == "lookalike.view":
            names |= {n for n in vars(cls) if not n.startswith("_") or n == "__len__"}
    return names


def test_index_provides_the_view_and_the_writer(sample_index) -> None:  # noqa: ANN001
    for name in sorted(_members(IndexWriter) | _members(IndexView)):
        assert hasattr(sample_index, name), name
    idx = sample_index
    assert idx.folder == idx.store.path and idx.hashes == idx.store.column("hash")
    assert idx.dim == idx.vectors.shape[1] and idx.created == idx.store.created
    assert idx.id_of(idx.names[3]) == 3 and idx.id_of("no/such.jpg") is None
    assert set(idx.recipe()) == {"model", "pooling", "resolution", "post"}


def test_no_task_imports_the_facade_not_even_for_hints() -> None:
    graph = grimp.build_graph("lookalike", exclude_type_checking_imports=False)
    for module in sorted(graph.modules):
        if module.removeprefix("lookalike.").split(".")[0] in (*TASKS, "view", "query"):
            assert "lookalike.index" not in graph.find_modules_directly_imported_by(module), module


def test_only_the_store_and_the_write_pipeline_touch_the_header() -> None:
    allowed = {"store.py", "build.py"}
    for path in sorted(LOOKALIKE.rglob("*.py")):
        if path.name in allowed and path.parent == LOOKALIKE:
            continue
        text = path.read_text()
        assert not re.search(r"store\.meta\b", text), path
        assert not re.search(r"\bindex\.store\b|\bidx\.store\b|self\.index\.store\b", text), path


def test_a_file_its_bytes_and_its_id_prepare_to_the_same_query(sample_index, sample_dir: Path) -> None:  # noqa: ANN001
    idx = sample_index
    name = idx.names[5]
    path = sample_dir / name
    [from_file] = query.prepare(idx, [path])
    from_bytes = query.from_bytes(idx, path.read_bytes(), path.name)
    from_id = query.from_id(idx, 5)
    assert from_file.self_ids == from_bytes.self_ids == from_id.self_ids == [5]
    assert np.array_equal(from_file.vector, from_bytes.vector)
    assert from_file.vector.shape == (1, idx.dim) and from_file.image is not None and from_file.meta is not None
    assert np.allclose(from_file.vector, idx.vectors[5:6], atol=1e-5)  # the query is described as the index was
    assert np.array_equal(from_id.vector, idx.vectors[5:6])
    # the library's prepare is the same path, stacked; a vector passes through with no self ids
    vectors, selves = idx.prepare([path, idx.vectors[2]])
    assert np.array_equal(vectors[0:1], from_file.vector) and np.array_equal(vectors[1], idx.vectors[2])
    assert selves == [[5], []]
    # classification leaves the query out through the same self ids
    assert idx.classify([path])[0].label == idx.labels[5]
    # a prepared query (as the server makes one) passes through with its self ids, in search too
    assert idx.classify([from_id])[0].label == idx.labels[5]
    assert 5 not in [m.id for m in idx.search(from_id, k=5)]


def test_info_is_typed_and_pairs_are_one_type(sample_index) -> None:  # noqa: ANN001
    summary = sample_index.summary()
    assert isinstance(summary, IndexInfo) and summary.images == len(sample_index)
    assert sample_index.info() == summary.to_dict()
    assert sample_index.info()["model"] == sample_index.config.model
    pairs = sample_index.pairs(3)
    assert pairs and all(isinstance(p, VerifiedPair) and p.verdict is None for p in pairs)
    a, b, score = pairs[0]
    assert (a, b, score) == (pairs[0].name_a, pairs[0].name_b, pairs[0].score)
    assert set(pairs[0].to_dict()) == {"a", "b", "score"}
