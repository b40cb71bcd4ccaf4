"""The claims registry, and the `check` tier: every chapter decides its registered claims.

Each executable chapter runs at ``profile="check"`` (sized so that its claims are decided); every
claim registered for it in ``book/claims/<chapter>.yaml`` must be decided in that run, with the
verdict the registry expects. A claim whose verdict flips fails here until the registry (and the
chapter's prose) says so on purpose.
"""

from __future__ import annotations

import json

import pytest
import yaml

from liftkit.companion import claims
from liftkit.companion.goldens import toc_chapters
from liftkit.companion.runner import run_chapter

CHAPTERS = toc_chapters()
#: Pages that list claims rather than decide them (the Claims page reads the registry).
LISTING_PAGES = {"verdicts"}
DECIDING = [c for c in CHAPTERS if c.stem not in LISTING_PAGES]


def _write_registry(root, chapter, entries):
    (root / "book" / "claims").mkdir(parents=True, exist_ok=True)
    (root / "book" / "claims" / f"{chapter}.yaml").write_text(yaml.safe_dump(entries))
    for name in ("_toc.yml", "data_manifest.yaml"):
        (root / name).touch()


ENTRY = dict(name="a-claim", paper="LIFT", reference="Fig. 2", statement="s", condition="c",
             expected="reproduced")


def test_registry_is_valid_and_names_toc_chapters():
    found = claims.registry()
    stems = {c.stem for c in CHAPTERS}
    assert found, "no claim is registered"
    for claim in found.values():
        assert claim.chapter in stems, f"{claim.name}: no chapter {claim.chapter!r} in _toc.yml"


@pytest.mark.parametrize("chapter", DECIDING, ids=[c.stem for c in DECIDING])
def test_every_chapter_registers_claims(chapter):
    assert claims.chapter_claims(chapter.stem), f"book/claims/{chapter.stem}.yaml registers nothing"


def test_listing_pages_are_in_the_book_and_decide_nothing():
    stems = [c.stem for c in CHAPTERS]
    for page in LISTING_PAGES:
        assert page in stems, f"the {page} page is not an executable chapter of _toc.yml"
        assert not claims.chapter_claims(page), f"book/claims/{page}.yaml: a listing page decides nothing"
    # The Claims page reads the verdicts the chapters record, so it must execute after them.
    # Sphinx reads (and myst-nb executes) pages in sorted order of their paths, not in the
    # order of _toc.yml: the page's path must sort after every chapter whose claims it lists.
    paths = {c.stem: str(c.relative_to(c.parents[1])) for c in CHAPTERS}
    for page in LISTING_PAGES:
        deciding = {paths[c.chapter] for c in claims.registry().values()}
        assert paths[page] > max(deciding), f"{paths[page]} executes before {max(deciding)}"
        assert stems.index(page) > max(stems.index(c.chapter) for c in claims.registry().values())


@pytest.mark.parametrize("change, message", [
    (dict(expected="maybe"), "expects"),
    (dict(paper="PDAE"), "names paper"),
    (dict(expected="not testable here"), "say why"),
    (dict(statement=None), "lacks"),
])
def test_registry_rejects_bad_entries(tmp_path, change, message):
    entry = {k: v for k, v in {**ENTRY, **change}.items() if v is not None}
    _write_registry(tmp_path, "ch", [entry])
    with pytest.raises(ValueError, match=message):
        claims.registry(tmp_path)


def test_registry_rejects_a_name_registered_twice(tmp_path):
    _write_registry(tmp_path, "one", [ENTRY])
    _write_registry(tmp_path, "two", [ENTRY])
    with pytest.raises(ValueError, match="twice"):
        claims.registry(tmp_path)


def test_decide_records_and_prints(tmp_path, monkeypatch, capsys):
    _write_registry(tmp_path, "ch", [ENTRY])
    monkeypatch.setenv("LIFTKIT_ROOT", str(tmp_path))
    monkeypatch.setenv(claims.ENV_DIR, str(tmp_path / "out"))
    verdict = claims.decide("a-claim", False, {"gap": 0.123456, "n": 3}, "check")
    assert verdict.verdict == "not reproduced"
    assert capsys.readouterr().out.strip() == "claim a-claim: not reproduced (gap = 0.123, n = 3)"
    saved = json.loads((tmp_path / "out" / "check" / "a-claim.json").read_text())
    assert saved["holds"] is False and saved["numbers"]["n"] == 3
    assert claims.recorded("check")["a-claim"]["verdict"] == "not reproduced"
    assert claims.recorded("default") == {}
    with pytest.raises(ValueError, match="not in"):
        claims.decide("no-such-claim", True, {}, "check")


def test_not_testable_records_its_reason(tmp_path, monkeypatch, capsys):
    _write_registry(tmp_path, "ch", [ENTRY, {**ENTRY, "name": "b-claim"}])
    monkeypatch.setenv("LIFTKIT_ROOT", str(tmp_path))
    monkeypatch.setenv(claims.ENV_DIR, str(tmp_path / "out"))
    verdict = claims.not_testable("a-claim", "no truth to compare with", "smoke-real")
    assert verdict.verdict == "not testable here" and verdict.holds is None
    assert capsys.readouterr().out.strip() == "claim a-claim: not testable here (no truth to compare with)"
    saved = json.loads((tmp_path / "out" / "smoke-real" / "a-claim.json").read_text())
    assert saved["holds"] is None and saved["reason"] == "no truth to compare with"
    table = claims.claims_table("smoke-real").set_index("claim")
    assert table.loc["a-claim", "verdict"] == "not testable here"
    assert table.loc["a-claim", "numbers"] == "no truth to compare with"
    assert table.loc["b-claim", "verdict"].endswith("(expected; not run in this build)")
    with pytest.raises(ValueError, match="say why"):
        claims.not_testable("b-claim", " ", "smoke-real")
    with pytest.raises(ValueError, match="not in"):
        claims.not_testable("no-such-claim", "why", "smoke-real")
    assert not (tmp_path / "out" / "smoke-real" / "b-claim.json").exists()


def test_claims_table_rows_and_verdicts(tmp_path, monkeypatch):
    entries = [
        ENTRY,
        {**ENTRY, "name": "b-claim", "paper": "SAMS-VAE", "expected": "not reproduced"},
        {**ENTRY, "name": "c-claim", "expected": "not testable here", "reason": "needs wet lab"},
    ]
    _write_registry(tmp_path, "ch", entries)
    monkeypatch.setenv("LIFTKIT_ROOT", str(tmp_path))
    monkeypatch.setenv(claims.ENV_DIR, str(tmp_path / "out"))
    claims.decide("a-claim", False, {"auc": 0.51234, "chance": 0.5}, "default")
    claims.decide("b-claim", True, {"n": 3}, "check")  # another profile: not shown
    table = claims.claims_table("default").set_index("claim")
    assert list(table.index) == ["a-claim", "b-claim", "c-claim"]
    assert list(table.columns) == [c for c in claims.TABLE_COLUMNS if c != "claim"]
    assert table.loc["a-claim", "verdict"] == "not reproduced"
    assert table.loc["a-claim", "numbers"] == "auc = 0.512, chance = 0.5"
    assert table.loc["b-claim", "verdict"] == "not reproduced (expected; not run in this build)"
    assert table.loc["b-claim", "numbers"] == "" and table.loc["b-claim", "paper"] == "SAMS-VAE"
    assert table.loc["c-claim", "verdict"] == "not testable here"
    assert table.loc["c-claim", "numbers"] == "needs wet lab"
    assert claims.claims_table("check").loc[1, "verdict"] == "reproduced"


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.stem for c in CHAPTERS])
def test_chapter_decides_its_claims_at_check_profile(chapter, tmp_path, monkeypatch):
    monkeypatch.setenv(claims.ENV_DIR, str(tmp_path / "claims"))
    run_chapter(chapter, tmp_path / f"{chapter.stem}.ipynb", {"profile": "check"}, progress=False)
    found = claims.recorded("check")
    problems = []
    for claim in claims.chapter_claims(chapter.stem):
        if claim.expected == "not testable here":
            continue
        got = found.get(claim.name)
        if got is None:
            problems.append(f"{claim.name}: not decided by the chapter")
        elif got["verdict"] != claim.expected:
            problems.append(f"{claim.name}: {got['verdict']} (registry expects {claim.expected}); "
                            f"numbers {got['numbers']}")
    assert not problems, "\n".join(problems)
