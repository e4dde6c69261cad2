"""What the `llm` researcher says to the model and how it reads the answer: the prompts (the program's source, its
knobs, the champion, research memory), the answer's JSON schema, and the checks an answer must pass (knobs in
the space, diffs inside the allow-list) before a proposal is kept."""
from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from ..workloads.script.patch import check_diff
from .base import Brief, Proposal, Trial

MAX_SOURCE, MAX_DIFF, MAX_LOG = 60_000, 1_500, 800  # characters shown in the prompt, so it stays bounded


class _Proposed(BaseModel):
    knobs: dict[str, Any] | None = None
    diff: str | None = None
    rationale: str
    expected_effect: str = ""


class _Answer(BaseModel):
    proposals: list[_Proposed]


class _Review(BaseModel):
    index: int
    keep: bool
    why: str = ""


class _Reviews(BaseModel):
    reviews: list[_Review]


# -- prompts ---------------------------------------------------------------------------------------------------
def _cut(text: str | None, limit: int, tail: bool = False) -> str:
    text = text or ""
    if len(text) <= limit:
        return text
    return f"[...{len(text) - limit} chars cut]\n" + text[-limit:] if tail else text[:limit] + "\n[...cut]"


def space_text(brief: Brief) -> str:
    lines = []
    for d in brief.space.dims.values():
        rng = f"one of {list(d.choices)}" if d.kind == "choice" else \
            f"in [{d.low}, {d.high}]{' (log scale)' if d.log else ''}"
        lines.append(f"- {d.name}: {d.kind} {rng}, default {d.default!r}")
    return "\n".join(lines)


def trial_text(t: Trial) -> str:
    parts = [f"### {t.id} (generation {t.generation}, role {t.role or '-'}, by {t.researcher or '-'})",
             f"knobs: {json.dumps(t.knobs, sort_keys=True, default=str)}",
             f"status: {t.status}; metric: {t.metric}; promoted: {t.promoted}"]
    if t.gate_reason:
        parts.append(f"gate: {t.gate_reason}")
    if t.error:
        parts.append(f"error: {_cut(t.error, MAX_LOG)}")
    if t.diff:
        parts.append(f"diff:\n```diff\n{_cut(t.diff, MAX_DIFF)}\n```")
    if t.log_tail:
        parts.append(f"log tail:\n```\n{_cut(t.log_tail, MAX_LOG, tail=True)}\n```")
    return "\n".join(parts)


def memory_text(brief: Brief, items: int) -> str:
    recent = brief.memory[-items:] if items else []
    return "\n\n".join(trial_text(t) for t in recent) or "(no past candidates yet)"


def sources_text(brief: Brief) -> str:
    return "\n\n".join(f"### {path}\n```\n{_cut(text, MAX_SOURCE)}\n```" for path, text in brief.sources.items())


def system_prompt(style: str | None) -> str:
    return ("You are a research engineer improving a training program, one generation at a time. Each of your "
            "proposals is run as an experiment and promoted only if it measurably beats the champion. "
            "Learn from research memory: do not repeat what was tried, and avoid what failed."
            + (f"\nYour role: {style}" if style else ""))


def sections(*parts: tuple[str, str]) -> str:
    return "\n\n".join(f"## {title}\n{body}" for title, body in parts)


def champion_text(brief: Brief) -> str:
    return (f"knobs: {json.dumps(brief.champion_knobs, sort_keys=True, default=str)}\n"
            f"{brief.metric} = {brief.champion_metric} (goal: {brief.direction} {brief.metric})")


def propose_prompt(brief: Brief, items: int) -> str:
    task = f"""Propose {brief.n} new candidate(s). Answer with one JSON object and nothing else:
{{"proposals": [{{"knobs": {{"<knob>": <value>}}, "diff": "<unified diff against the files above>" or null,
"rationale": "<why this should help>", "expected_effect": "<what you expect on {brief.metric}>"}}]}}
"knobs" is a change on the champion's knobs (only the knobs you change; may be empty); every value must lie
inside the knob space. A diff uses --- a/<path> / +++ b/<path> headers and may touch only the files above."""
    return sections(("Program sources (allow-listed)", sources_text(brief)),
                    ("Files a diff may touch (glob patterns)", ", ".join(brief.editable)),
                    ("Knob space", space_text(brief)), ("Champion", champion_text(brief)),
                    ("Champion's weaknesses", "\n".join(f"- {w}" for w in brief.weaknesses) or "(none recorded)"),
                    (f"Research memory (most recent {items} past candidates)", memory_text(brief, items)),
                    ("Task", task))


def review_prompt(brief: Brief, proposals: list[Proposal], items: int) -> str:
    listed = "\n\n".join(f"### proposal {i}\nknobs: {json.dumps(p.knobs, sort_keys=True, default=str)}\n"
                         f"rationale: {p.rationale}\ndiff:\n{_cut(p.diff, MAX_DIFF) or '(none)'}"
                         for i, p in enumerate(proposals))
    task = """For each proposal, say whether it is worth an experiment (drop repeats of what was tried, and changes
memory shows fail). Answer with one JSON object and nothing else:
{"reviews": [{"index": <proposal number>, "keep": true or false, "why": "<one sentence>"}]}"""
    return sections(("Champion", champion_text(brief)), ("Research memory", memory_text(brief, items)),
                    ("Proposals to review", listed), ("Task", task))


# -- answers ---------------------------------------------------------------------------------------------------
def extract_json(text: str) -> Any:
    """The single JSON object in a reply, tolerant of ```json fences and prose around it."""
    error = "the answer holds no JSON object"
    for body in [*re.findall(r"```(?:json)?\s*(.*?)```", text, re.S), text]:
        start, end = body.find("{"), body.rfind("}")
        if start >= 0:
            try:
                return json.loads(body[start:end + 1] if end > start else body[start:])
            except json.JSONDecodeError as e:
                error = f"the answer is not valid JSON ({e})"
    raise ValueError(error)


def _schema_error(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'answer'}: {err['msg']}" for err in e.errors())


def parse(text: str, schema: type[BaseModel]) -> BaseModel:
    """The reply validated by `schema`, or ValueError with the reason the model is shown."""
    try:
        return schema.model_validate(extract_json(text))
    except ValidationError as e:
        raise ValueError(f"the answer does not match the schema: {_schema_error(e)}") from None


def check_proposals(brief: Brief, text: str, role: str | None) -> tuple[list[Proposal], list[str]]:
    """The valid proposals of one reply, and the reason for each one refused."""
    try:
        answer = parse(text, _Answer)
    except ValueError as e:
        return [], [str(e)]
    good, bad = [], []
    for i, p in enumerate(answer.proposals):
        try:
            knobs = brief.space.validate({**brief.champion_knobs, **(p.knobs or {})})
        except ValueError as e:
            bad.append(f"proposal {i}: {e}")
            continue
        diff = p.diff if p.diff and p.diff.strip() else None
        reasons = check_diff(diff, brief.editable) if diff else []
        if reasons:
            bad.append(f"proposal {i}: diff refused: {'; '.join(reasons)}")
            continue
        good.append(Proposal(knobs, p.rationale, diff, p.expected_effect or None, role=role, researcher="llm"))
    return good, bad


def check_reviews(text: str, count: int) -> tuple[list[_Review], list[str]]:
    try:
        reviews = parse(text, _Reviews).reviews
    except ValueError as e:
        return [], [str(e)]
    bad = [f"review index {r.index} is not a proposal number (0..{count - 1})"
           for r in reviews if not 0 <= r.index < count]
    return [r for r in reviews if 0 <= r.index < count], bad


# -- the researcher --------------------------------------------------------------------------------------------
