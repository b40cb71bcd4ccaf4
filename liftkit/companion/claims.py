"""The claims registry: every claim of the two papers that the book tests, decided by name.

The registry is the folder ``book/claims/``: one YAML file per chapter (``<chapter>.yaml``, the
chapter's file stem), each a list of claims with their ``name``, the ``paper`` and ``reference`` (figure, table, proposition), the paper's
``statement``, the ``condition`` our chapter tests, and ``expected``: the verdict the book
currently reaches (``reproduced``, ``not reproduced`` or ``not testable here``, the last with a
``reason``). A chapter decides a claim with :func:`decide`, which prints one line and records the
numbers behind it as JSON under ``runs/claims/<profile>/<name>.json`` (atomically). The
``Claims`` page of the book is built from the registry and those records, and the ``check``
tier of ``make test`` runs every chapter at ``profile="check"`` and fails when a claim is not
decided or its verdict differs from ``expected`` (a verdict changes only with the registry, on
purpose, never silently).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from liftkit.utils import atomic_path, repo_root

if TYPE_CHECKING:
    import pandas as pd

NOT_TESTABLE = "not testable here"
VERDICTS = ("reproduced", "not reproduced", NOT_TESTABLE)
PAPERS = ("LIFT", "SAMS-VAE")
REGISTRY = Path("book") / "claims"  # one <chapter>.yaml per chapter, under the repository root
ENV_DIR = "LIFTKIT_CLAIMS_DIR"


@dataclass(frozen=True)
class Claim:
    """One entry of the registry (``book/claims/<chapter>.yaml``)."""

    name: str
    chapter: str
    paper: str
    reference: str
    statement: str
    condition: str
    expected: str
    reason: str = ""


@dataclass
class Verdict:
    """What a chapter run found for one claim."""

    name: str
    holds: bool | None  # None: the run cannot decide it (see ``reason``)
    numbers: dict[str, Any]
    profile: str
    reason: str = ""
    verdict: str = field(init=False)

    def __post_init__(self) -> None:
        if self.holds is None:
            self.verdict = NOT_TESTABLE
        else:
            self.verdict = "reproduced" if self.holds else "not reproduced"

    def line(self) -> str:
        """One line for the chapter's output: name, verdict and the numbers, rounded (or why
        the claim cannot be decided)."""
        nums = ", ".join(f"{k} = {_fmt(v)}" for k, v in self.numbers.items())
        return f"claim {self.name}: {self.verdict} ({nums or self.reason})"


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3g}"
    return str(value)


def _parse(raw: dict[str, Any], source: Path) -> Claim:
    raw = {**raw, "chapter": source.stem}
    name = raw.get("name", "<unnamed>")
    fields = set(Claim.__dataclass_fields__)
    missing = sorted(fields - {"reason", "chapter"} - set(raw))
    unknown = sorted(set(raw) - fields)
    if missing or unknown:
        raise ValueError(f"{source}: claim {name!r} lacks {missing} or has unknown {unknown} fields")
    if raw["expected"] not in VERDICTS:
        raise ValueError(f"{source}: claim {name!r} expects {raw['expected']!r}; use one of {VERDICTS}")
    if raw["paper"] not in PAPERS:
        raise ValueError(f"{source}: claim {name!r} names paper {raw['paper']!r}; use one of {PAPERS}")
    if raw["expected"] == NOT_TESTABLE and not raw.get("reason"):
        raise ValueError(f"{source}: claim {name!r} is not testable here: say why in `reason`")
    return Claim(**{k: str(v) for k, v in raw.items()})


def registry(root: str | Path | None = None) -> dict[str, Claim]:
    """Read and validate every ``book/claims/<chapter>.yaml``; names are unique across them.

    Examples
    --------
    >>> claims = registry()  # doctest: +SKIP
    >>> claims["lift-rises-with-moi"].paper  # doctest: +SKIP
    'LIFT'
    """
    folder = (repo_root() if root is None else Path(root)) / REGISTRY
    claims: dict[str, Claim] = {}
    for path in sorted(folder.glob("*.yaml")):
        for raw in yaml.safe_load(path.read_text()) or []:
            claim = _parse(raw, path)
            if claim.name in claims:
                raise ValueError(f"{path}: claim {claim.name!r} is registered twice")
            claims[claim.name] = claim
    return claims


def chapter_claims(chapter: str, root: str | Path | None = None) -> list[Claim]:
    """The claims a chapter (file stem, e.g. ``"moi_experiment"``) decides."""
    return [c for c in registry(root).values() if c.chapter == chapter]


def record_dir(profile: str) -> Path:
    """Where verdicts of a profile go: ``$LIFTKIT_CLAIMS_DIR/<profile>``, else ``runs/claims``."""
    env = os.environ.get(ENV_DIR)
    base = Path(env) if env else repo_root() / "runs" / "claims"
    return base / profile


def decide(name: str, holds: bool, numbers: dict[str, Any], profile: str) -> Verdict:
    """Decide a registered claim: print its verdict line and record it for the Claims page.

    Parameters
    ----------
    name
        A registered claim; an unknown name is an error listing the known ones.
    holds
        Whether the chapter's condition holds in this run.
    numbers
        The numbers that decide it (means, spreads, the chance level or ceiling beside them);
        JSON-serialisable scalars.
    profile
        The chapter's profile; records of different profiles never overwrite each other.

    Examples
    --------
    >>> v = decide("lift-rises-with-moi", True, {"low": 0.1, "high": 0.4}, "smoke")  # doctest: +SKIP
    claim lift-rises-with-moi: reproduced (low = 0.1, high = 0.4)
    """
    numbers = {k: (v.item() if hasattr(v, "item") else v) for k, v in numbers.items()}
    return _record(Verdict(_known(name), bool(holds), numbers, profile))


def not_testable(name: str, reason: str, profile: str) -> Verdict:
    """Record that this run cannot decide a registered claim, and say why.

    For a run whose data lack what the claim needs (a measured screen has no simulated truth;
    a split left a category empty). The Claims page shows the verdict "not testable here" with
    the reason, never a silent gap.

    Parameters
    ----------
    name
        A registered claim; an unknown name is an error listing the known ones.
    reason
        Why the run cannot decide it (not empty).
    profile
        The record's profile, as for :func:`decide`.

    Examples
    --------
    >>> v = not_testable("lifted-beats-single-guide", "no truth", "smoke")  # doctest: +SKIP
    claim lifted-beats-single-guide: not testable here (no truth)
    """
    if not reason.strip():
        raise ValueError(f"not_testable({name!r}): say why the claim cannot be decided here")
    return _record(Verdict(_known(name), None, {}, profile, reason=reason))


def _known(name: str) -> str:
    """``name`` if the registry has it, else an error listing the registered claims."""
    claims = registry()
    if name not in claims:
        raise ValueError(f"claim {name!r} is not in {REGISTRY}; registered: {sorted(claims)}")
    return name


def _record(verdict: Verdict) -> Verdict:
    """Write ``verdict`` under its profile's record folder (atomically) and print its line."""
    target = record_dir(verdict.profile) / f"{verdict.name}.json"
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(asdict(verdict), indent=1, sort_keys=True))
    print(verdict.line())
    return verdict


def recorded(profile: str) -> dict[str, dict[str, Any]]:
    """Every verdict recorded at ``profile``, by claim name (empty when none was run)."""
    folder = record_dir(profile)
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


#: Columns of :func:`claims_table`.
TABLE_COLUMNS = ("paper", "claim", "chapter", "reference", "statement", "condition", "numbers",
                 "verdict")
NOT_RUN = "not run in this build"


def _table_verdict(claim: Claim, got: dict[str, Any] | None) -> tuple[str, str]:
    """(verdict, numbers) of one row: the recorded run, else the registry's expectation."""
    if claim.expected == NOT_TESTABLE:
        return NOT_TESTABLE, claim.reason
    if got is None:
        return f"{claim.expected} (expected; {NOT_RUN})", ""
    if got["verdict"] == NOT_TESTABLE:
        return NOT_TESTABLE, got["reason"]
    nums = ", ".join(f"{k} = {_fmt(v)}" for k, v in got["numbers"].items())
    return got["verdict"], nums


def claims_table(profile: str = "default", root: str | Path | None = None) -> pd.DataFrame:
    """Every registered claim with the verdict recorded at ``profile``: the Claims page's table.

    One row per claim, in registry order (chapter files sorted, claims in file order), with the
    columns of :data:`TABLE_COLUMNS`. ``verdict`` is the recorded one (``reproduced`` or ``not
    reproduced``) and ``numbers`` the recorded numbers, rounded; a claim the registry marks
    ``not testable here`` shows that verdict and its reason; a claim with no record at
    ``profile`` shows the registry's expected verdict marked "not run in this build".

    Examples
    --------
    >>> claims_table("default").columns.tolist()  # doctest: +SKIP
    ['paper', 'claim', 'chapter', 'reference', 'statement', 'condition', 'numbers', 'verdict']
    """
    import pandas as pd

    found = recorded(profile)
    rows = []
    for claim in registry(root).values():
        verdict, nums = _table_verdict(claim, found.get(claim.name))
        rows.append(dict(paper=claim.paper, claim=claim.name, chapter=claim.chapter,
                         reference=claim.reference, statement=claim.statement,
                         condition=claim.condition, numbers=nums, verdict=verdict))
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
