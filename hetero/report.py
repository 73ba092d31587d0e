"""The compatibility report: one data structure, rendered as JSON, Markdown and a terminal table."""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hetero.errors import InputError
from hetero.io import atomic_write_json, atomic_write_text, read_json

REPORT_SCHEMA = "hetero.report/1"
KINDS = ("reference", "candidate", "control", "self")


@dataclass
class Row:
    """Queries embedded by `query` searched against a gallery embedded by `gallery`."""

    name: str
    query: str
    gallery: str
    runtime: str
    kind: str  # reference: cloud→cloud; candidate: gated edge→cloud; control: ungated baseline; self: X→X
    recall_at_1: float
    recall_at_5: float
    map: float
    n_query: int
    n_gallery: int
    same_space: bool = True
    parity_min_cosine: float | None = None  # vs the torch reference of the same model, where one exists


@dataclass
class Report:
    space: dict[str, Any]
    dataset: dict[str, Any]
    chance: dict[str, float]
    rows: list[Row]
    producers: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    schema: str = REPORT_SCHEMA

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def reference(self) -> Row | None:
        return next((r for r in self.rows if r.kind == "reference"), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "created": self.created,
            "space": self.space,
            "dataset": self.dataset,
            "chance": self.chance,
            "producers": self.producers,
            "rows": [asdict(r) for r in self.rows],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "report") -> Report:
        if not isinstance(d, dict) or d.get("schema") != REPORT_SCHEMA:
            raise InputError(f"{where}: not a hetero report (expected schema {REPORT_SCHEMA!r})")
        try:
            rows = [Row(**r) for r in d["rows"]]
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
            )
        except (KeyError, TypeError) as e:
            raise InputError(f"{where}: malformed report ({e})") from None

    @classmethod
    def load(cls, path: Path) -> Report:
        return cls.from_dict(read_json(path, "report"), str(path))

    def save(self, directory: Path, stem: str = "report") -> dict[str, Path]:
        directory = Path(directory)
        paths = {"json": directory / f"{stem}.json", "markdown": directory / f"{stem}.md"}
        atomic_write_json(paths["json"], self.to_dict())
        atomic_write_text(paths["markdown"], self.to_markdown())
        return paths

    def _table(self) -> tuple[list[str], list[list[str]]]:
        head = ["query → gallery", "runtime", "kind", "R@1", "R@5", "mAP", "parity cos"]
        body = []
        for r in self.rows:
            cos = "" if r.parity_min_cosine is None else f"{r.parity_min_cosine:.6f}"
            kind = r.kind if r.same_space else f"{r.kind} (foreign space)"
            body.append([r.name, r.runtime, kind, f"{r.recall_at_1:.3f}", f"{r.recall_at_5:.3f}", f"{r.map:.3f}", cos])
        return head, body

    def to_text(self) -> str:
        head, body = self._table()
        widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*b) for b in body]
        lines.append(
            f"chance R@1 = {self.chance['recall_at_1']:.3f}   space = {self.space['id']} (dim {self.space['dim']})"
        )
        return "\n".join(lines)

    def to_markdown(self) -> str:
        head, body = self._table()
        lines = [
            "# hetero compatibility report",
            "",
            f"Space `{self.space['id']}` (dim {self.space['dim']}, {self.space['metric']}); dataset "
            f"`{self.dataset.get('name')}`: {self.dataset.get('query_images')} queries, "
            f"{self.dataset.get('gallery_images')} gallery images from held-out classes "
            f"{self.dataset.get('heldout_classes')}. Chance R@1 = {self.chance['recall_at_1']:.3f}.",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "|".join("---" for _ in head) + "|",
        ]
        lines += ["| " + " | ".join(b) + " |" for b in body]
        return "\n".join(lines) + "\n"
