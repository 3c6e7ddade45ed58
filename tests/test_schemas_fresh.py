"""The committed schemas/ must equal what the code generates (run `ckpt schema export`)."""

from ckpt_tools.schemas import SCHEMA_DIR, build_schemas


def test_committed_schemas_are_fresh():
    built = build_schemas()
    committed = {p.name: p.read_text() for p in SCHEMA_DIR.glob("*.schema.json")}
    stale = sorted(n for n in built if committed.get(n) != built[n])
    extra = sorted(set(committed) - set(built))
    assert not stale and not extra, f"stale: {stale}, unknown: {extra}; run `ckpt schema export`"
