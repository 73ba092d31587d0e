"""The compatibility report: one data structure, rendered as JSON, Markdown and a terminal table."""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hetero.errors import InputError
from hetero.io import atomic_write_json, atomic_write_text, read_json

REPORT_SCHEMA = "hetero.report/1"
# upgrade: the v2 cloud's queries in v1's gallery (no backfill, gated); backfill: queries in the v2 cloud's gallery
KINDS = ("reference", "candidate", "control", "previous", "self", "upgrade", "backfill", "resize")


@dataclass
class Row:
    """Queries embedded by `query` searched against a gallery embedded by `gallery`."""

    name: str
    query: str
    gallery: str
    runtime: str
    kind: str  # reference: cloud→cloud; candidate: gated edge→cloud; control: ungated; previous: older release; self
    recall_at_1: float | None = None  # None: not executed
    recall_at_5: float | None = None
    map: float | None = None
    n_query: int = 0
    n_gallery: int = 0
    status: str = "ok"  # "ok" | "not executed" (skipped: no runtime here) | "failed" (the runtime refused the artifact)
    note: str = ""
    cpu: str = ""  # the CPU the row's producer ran on: architecture and the ISA extensions that pick its kernels
    same_space: bool = True
    parity_min_cosine: float | None = None  # vs the same model on another runtime (or its torch checkpoint)
    latency_ms: float | None = None  # median per probe at batch 1, as on a device
    negative_flip_rate: float | None = None  # probes cloud→cloud gets right at top-1 and this row gets wrong
    previous_flip_rate: float | None = None  # probes the previous release gets right and this one gets wrong
    # NFR over what independent errors would give, R@1_ref * (1 - R@1): 1 = flips as if unrelated to the reference,
    # below 1 = the row keeps the reference's right answers (positive-congruent; Yan et al., CVPR 2021)
    relative_flip_rate: float | None = None
    # The counts the gate decides on (hetero.release.stats): top-1 hits, paired top-1 outcomes against the reference row
    # and the previous release ({"n", "worse", "better"}), and the 95% interval of mAP.
    r1_hits: int | None = None
    vs_reference: dict[str, int] | None = None
    vs_previous: dict[str, int] | None = None
    map_interval: list[float] | None = None
    finite: bool = True  # every embedding finite; NaN/Inf fail every rule
    # Which items regressed: class label -> probes of that class the reference (previous release) retrieves
    # correctly at top-1 and this row does not; classes without a flip are left out.
    flips_by_class: dict[str, int] | None = None
    previous_flips_by_class: dict[str, int] | None = None

    @property
    def executed(self) -> bool:
        return self.status == "ok"


@dataclass
class Report:
    space: dict[str, Any]
    dataset: dict[str, Any]
    chance: dict[str, float]
    rows: list[Row]
    producers: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    schema: str = REPORT_SCHEMA
    # R@1 of query producer x gallery producer: {"queries": [...], "galleries": [...], "recall_at_1": [[...]]}
    matrix: dict[str, Any] | None = None
    signature: dict[str, str] | None = None  # the signer's record over content_sha256 (hetero.release.signing)
    signed_by: str = ""  # the trusted key id that verified it at load
    hetero_version: str = ""  # the hetero that measured it ("" in reports written before it was recorded)
    # What it was measured under: {"thresholds": the [check] table, "config_sha256": the whole run config's digest}.
    # `check --report` judges with these thresholds (a floor) and states any difference; older reports lack it.
    verified_under: dict[str, Any] | None = None

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def reference(self) -> Row | None:
        return next((r for r in self.rows if r.kind == "reference"), None)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "schema": self.schema,
            "created": self.created,
            "space": self.space,
            "dataset": self.dataset,
            "chance": self.chance,
            "producers": self.producers,
            "rows": [asdict(r) for r in self.rows],
            **({"matrix": self.matrix} if self.matrix is not None else {}),
            **({"hetero_version": self.hetero_version} if self.hetero_version else {}),
            **({"verified_under": self.verified_under} if self.verified_under is not None else {}),
        }
        return {**d, "content_sha256": content_sha256(d), **({"signature": self.signature} if self.signature else {})}

    def sign(self, private_key: Any) -> None:
        """Sign the report's content hash (what `check --report --trust` verifies)."""
        from hetero.release import signing

        body = self.to_dict()
        self.signature = signing.sign(private_key, REPORT_SCHEMA, body["content_sha256"])

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "report", trust: list[Any] | None = None) -> Report:
        if not isinstance(d, dict) or d.get("schema") != REPORT_SCHEMA:
            raise InputError(f"{where}: not a hetero report (expected schema {REPORT_SCHEMA!r})")
        body = {k: v for k, v in d.items() if k not in ("content_sha256", "signature")}
        digest = content_sha256(body)
        if not digest or d.get("content_sha256") != digest:
            raise InputError(f"{where}: report checksum mismatch: it was edited, or written by an older hetero")
        signed_by = ""
        if trust:
            from hetero.release import signing

            signed_by = signing.verify(d.get("signature"), REPORT_SCHEMA, digest, trust, where).key_id
        try:
            space, chance = d["space"], d["chance"]
            if not (isinstance(space, dict) and isinstance(space.get("id"), str) and isinstance(space.get("dim"), int)):
                raise InputError(f"{where}: space must be an object with an id and a dim")
            if not (isinstance(chance, dict) and _number(chance.get("recall_at_1"))) or not isinstance(
                d["dataset"], dict
            ):
                raise InputError(f"{where}: chance and dataset must be objects (chance with recall_at_1)")
            if not isinstance(d.get("producers", {}), dict):
                raise InputError(f"{where}: producers must be an object")
            if not isinstance(d["rows"], list) or not all(isinstance(r, dict) for r in d["rows"]):
                raise InputError(f"{where}: rows must be a list of objects")
            matrix = d.get("matrix")
            if matrix is not None and not _valid_matrix(matrix):
                raise InputError(f"{where}: matrix must list queries, galleries and an R@1 per pair in [0, 1]")
            under = d.get("verified_under")
            if under is not None and not (isinstance(under, dict) and isinstance(under.get("thresholds"), dict)):
                raise InputError(f"{where}: verified_under must be an object with a thresholds table")
            rows = [Row(**r) for r in d["rows"]]
            for r in rows:
                _check_row_types(r, where)
            bad = [r.kind for r in rows if r.kind not in KINDS]
            if bad:
                raise InputError(f"{where}: unknown row kind {bad[0]!r}")
            return cls(
                space=d["space"],
                dataset=d["dataset"],
                chance=d["chance"],
                rows=rows,
                producers=d.get("producers", {}),
                created=d.get("created", ""),
                matrix=matrix,
                signature=d["signature"] if isinstance(d.get("signature"), dict) else None,
                signed_by=signed_by,
                hetero_version=str(d.get("hetero_version", "")),
                verified_under=under,
            )
        except (KeyError, TypeError) as e:
            raise InputError(f"{where}: malformed report ({e})") from None

    @classmethod
    def load(cls, path: Path, trust: list[Any] | None = None) -> Report:
        return cls.from_dict(read_json(path, "report"), str(path), trust)

    def save(self, directory: Path, stem: str = "report") -> dict[str, Path]:
        directory = Path(directory)
        paths = {"json": directory / f"{stem}.json", "markdown": directory / f"{stem}.md"}
        atomic_write_json(paths["json"], self.to_dict())
        atomic_write_text(paths["markdown"], self.to_markdown())
        return paths

    def _table(self) -> tuple[list[str], list[list[str]]]:
        head = [
            "query → gallery",
            "runtime",
            "CPU",
            "kind",
            "R@1 [95% CI]",
            "R@5",
            "mAP",
            "neg. flips",
            "parity cos",
            "ms/img",
        ]

        def f(v: float | None, fmt: str) -> str:
            return "" if v is None else format(v, fmt)

        body = []
        for r in self.rows:
            kind = r.kind if r.same_space else f"{r.kind} (foreign space)"
            if not r.executed:
                body.append([r.name, r.runtime, r.cpu, kind, r.status, "", "", "", "", ""])
                continue
            flips = f(r.negative_flip_rate, ".3f")
            if r.relative_flip_rate is not None and r.kind != "reference":
                flips += f" (rel {r.relative_flip_rate:.2f})"
            if r.previous_flip_rate is not None:
                flips += f" (prev {r.previous_flip_rate:.3f})"
            body.append(
                [
                    r.name,
                    r.runtime,
                    r.cpu,
                    kind,
                    _with_interval(r),
                    f(r.recall_at_5, ".3f"),
                    f(r.map, ".3f"),
                    flips,
                    f(r.parity_min_cosine, ".6f"),
                    f(r.latency_ms, ".3f"),
                ]
            )
        return head, body

    def to_junit(self, gate: Any, error: str = "") -> str:
        """JUnit XML for CI dashboards: one test per (row, rule); not-executed rows are skipped, never passed; a run
        that ended in an error (nothing could execute here) adds an error case, so the suite never looks clean."""
        from hetero.release.junit import Case, error_case, suite

        cases = [
            Case(
                rule.row,
                rule.rule,
                output=rule.describe(),  # value, interval, threshold, n
                failure=rule.describe() if gate.counts(rule) and not rule.passed else "",
                skipped=rule.describe() if not rule.evaluated and not gate.counts(rule) else "",
            )
            for rule in gate.rules
        ]
        return suite(cases + ([error_case(error)] if error else []))

    def to_text(self) -> str:
        head, body = self._table()
        widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*b) for b in body]
        lines.append(
            f"chance R@1 = {self.chance['recall_at_1']:.3f}   space = {self.space['id']} (dim {self.space['dim']})"
        )
        lines.append(search_line(self.dataset.get("gallery_search")))
        lines += [f"{'FAIL' if r.status == 'failed' else 'SKIP'}  {r.name}: {r.status} — {r.note}"
                  for r in self.rows if not r.executed]  # fmt: skip
        return "\n".join(lines)

    def _flips_markdown(self) -> list[str]:
        """Which classes the flips fall in, per gated row: where a team looks first."""
        lines = []
        for r in self.rows:
            for what, counts in (("cloud", r.flips_by_class), ("the previous release", r.previous_flips_by_class)):
                if counts:
                    lines.append(f"- {r.name}: flips against {what} by class: {_top_classes(counts)}")
        return ["", "## Negative flips by class", "", *lines] if lines else []

    def to_markdown(self) -> str:
        head, body = self._table()
        lines = [
            "# hetero compatibility report",
            "",
            f"Space `{self.space['id']}` (dim {self.space['dim']}, {self.space['metric']}); dataset "
            f"`{self.dataset.get('dataset', self.dataset.get('name'))}`: {self.dataset.get('query_images')} queries, "
            f"{self.dataset.get('gallery_images')} gallery images from held-out classes "
            f"{self.dataset.get('heldout_classes')}. Chance R@1 = {self.chance['recall_at_1']:.3f}.",
            "",
            search_line(self.dataset.get("gallery_search")).capitalize() + ".",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "|".join("---" for _ in head) + "|",
        ]
        lines += ["| " + " | ".join(b) + " |" for b in body]
        lines += ["", *(f"- {r.status}: {r.name}: {r.note}" for r in self.rows if not r.executed)]
        lines += [
            "",
            "Negative flips: probes the cloud model retrieves correctly at top-1 and this producer does not "
            "(rel: over what independent errors would give, R@1 cloud × (1 − R@1 row); prev: vs the previous "
            "release). ms/img: median per probe at batch 1.",
        ]
        lines += self._flips_markdown()
        return "\n".join(lines) + "\n"


def _top_classes(counts: dict[str, int], k: int = 10) -> str:
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    more = len(counts) - len(top)
    return ", ".join(f"{c} ({n})" for c, n in top) + (f", … {more} more classes" if more > 0 else "")


def _valid_matrix(m: Any) -> bool:
    try:
        q, g, v = m["queries"], m["galleries"], m["recall_at_1"]
        return (
            all(isinstance(x, str) for x in [*q, *g])
            and len(v) == len(q)
            and all(len(row) == len(g) and all(_number(x) and 0 <= x <= 1 for x in row) for row in v)
        )
    except (KeyError, TypeError):
        return False


def search_line(record: dict[str, Any] | None) -> str:
    """How the cloud gallery was searched, in one line (a report from before indexes: dense)."""
    if not record or record.get("search") != "faiss":
        return "gallery search: dense (every gallery item ranked exactly)"
    text = f"gallery search: faiss {record['factory']} ({record['kind']}), top {record['depth']} per query"
    r = record.get("recall_vs_exact") or {}
    if record["kind"] != "exact" and "recall_1_at_10" in r:
        text += f", recall vs exact 1-R@10 {r['recall_1_at_10']:.3f} / 10-R@10 {r['recall_10_at_10']:.3f}"
    if record.get("fallback"):
        text += f" ({record['fallback']})"
    return text + "; mAP counts relevant items within the top results (a lower bound of the full-ranking mAP)"


def content_sha256(d: dict[str, Any]) -> str:
    """sha256 of a report's canonical JSON (without the hash itself): the counts a verdict is decided on are covered."""
    import hashlib
    import json

    try:
        text = json.dumps(d, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return ""  # not representable: can never match a stored hash
    return hashlib.sha256(text.encode()).hexdigest()


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check_row_types(r: Row, where: str) -> None:
    """A report is an input like any other: text where a number belongs, NaN, or a forged count is exit 2."""
    problems = []
    for f in fields(Row):
        v, t = getattr(r, f.name), str(f.type)
        optional = "None" in t
        if v is None and optional:
            continue
        if t.startswith("str"):
            ok = isinstance(v, str)
        elif t.startswith("bool"):
            ok = isinstance(v, bool)
        elif t.startswith("int"):
            ok = isinstance(v, int) and not isinstance(v, bool) and v >= 0
        elif t.startswith("float"):
            if f.name in ("latency_ms", "relative_flip_rate"):  # a ratio over chance may exceed 1 (a control's does)
                ok = _number(v) and v >= 0
            else:
                ok = _number(v) and -1.0 <= v <= 1.0
        elif t.startswith("dict"):
            ok = isinstance(v, dict) and all(
                isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v.values()
            )
        elif t.startswith("list"):
            ok = isinstance(v, list) and len(v) == 2 and all(_number(x) for x in v)
        else:
            ok = True
        if not ok:
            problems.append(f"{f.name}={v!r}")
    if r.kind not in KINDS:
        problems.append(f"kind={r.kind!r}")
    problems += _count_problems(r)
    if problems:
        raise InputError(f"{where}: row {r.name!r} has invalid values: {', '.join(problems[:3])}")


def _count_problems(r: Row) -> list[str]:
    """Counts that cannot come from one probe set: more hits than queries, paired changes beyond their pairs, an
    executed row with no queries, an interval that is not one."""
    out = []
    if r.executed and r.recall_at_1 is not None and r.n_query < 1:
        out.append(f"n_query={r.n_query} (an executed row has queries)")
    if isinstance(r.r1_hits, int) and isinstance(r.n_query, int) and r.r1_hits > r.n_query:
        out.append(f"r1_hits={r.r1_hits} > n_query={r.n_query}")
    for name in ("vs_reference", "vs_previous"):
        d = getattr(r, name)
        if isinstance(d, dict):
            if set(d) != {"n", "worse", "better"}:
                out.append(f"{name} keys {sorted(d)}")
            elif d["worse"] + d["better"] > d["n"] or d["n"] != r.n_query:
                out.append(f"{name}={d} (worse + better <= n = n_query {r.n_query})")
    if isinstance(r.map_interval, list) and len(r.map_interval) == 2 and all(map(_number, r.map_interval)):
        lo, hi = r.map_interval
        if not 0.0 <= lo <= hi <= 1.0:
            out.append(f"map_interval={r.map_interval}")
    return out


def _with_interval(r: Row) -> str:
    """R@1 with its exact 95% interval when the row carries its hit count."""
    if r.recall_at_1 is None:
        return ""
    if r.r1_hits is None or not r.n_query:
        return f"{r.recall_at_1:.3f}"
    from hetero.release.stats import proportion

    return proportion(int(r.r1_hits), int(r.n_query)).text()
