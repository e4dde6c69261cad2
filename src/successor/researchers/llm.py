"""The `llm` researcher: a chat model reads the program, its knobs and research memory, and proposes candidates.

It speaks to any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp, Ollama) through the `openai` package, or to
Anthropic through `anthropic`. The model answers JSON; an answer that fails the schema, the knob space or the
diff allow-list goes back to it with the validation error (`cfg.repairs` times), then the bad proposals are
dropped and said so in `last_notes`. Every attempt is one `llm_calls` row (tokens, cost, status) and one JSON
transcript, so the run's spend is auditable, and the policy's cost cap is checked before every call.

API key: read from the environment variable `cfg.api_key_env`; a missing one is a ValueError naming it, except
when `base_url` points to this machine (127.0.0.1, localhost, ::1), where local servers need none and a dummy
key is sent. Anthropic's `base_url` is the host without `/v1` (its client adds `/v1/messages`); `temperature`
is sent to OpenAI-compatible endpoints only (the installed `anthropic` client no longer takes it).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

from ..config import LLMConfig
from ..oversight.policy import Budgets
from ..store import Store
from .base import Brief, Proposal, ResearcherPaused, proposal_key
from .llm_prompt import check_proposals, check_reviews, propose_prompt, review_prompt, system_prompt

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
MAX_RETRY_AFTER_S = 60.0  # a server's retry-after is honoured up to this; a longer one must not stall the loop


class CallFailed(Exception):
    """A call that still failed after its retries (or failed in a way no retry can fix)."""


@dataclass
class _Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    started: float
    seconds: float
    attempt: int


class LLMResearcher:
    """Proposes (and, as the critic, reviews) through one chat model. In llm_calls, `attempt` counts the tries of
    one request (1: the first, 2: its first retry); a repair is a new request."""

    name = "llm"

    def __init__(self, cfg: LLMConfig, store: Store, transcripts: Path, budgets: Budgets,
                 role: str | None = None, style: str | None = None, sleep: Callable[[float], None] = time.sleep):
        self.cfg, self.store, self.budgets, self.role, self.style, self.sleep = cfg, store, budgets, role, style, sleep
        self.transcripts = Path(transcripts)
        self.transcripts.mkdir(parents=True, exist_ok=True)
        self.last_notes: list[str] = []
        self._sdk, self._client = _make_client(cfg)

    # -- the protocol ------------------------------------------------------------------------------------------
    def propose(self, brief: Brief) -> list[Proposal]:
        self.last_notes = []
        kept: list[Proposal] = []
        if brief.n <= 0:
            return kept

        def accept(text: str) -> list[str]:
            good, bad = check_proposals(brief, text, self.role)
            seen = {proposal_key(p.knobs, p.diff) for p in kept}
            kept.extend(p for p in good if proposal_key(p.knobs, p.diff) not in seen)
            return bad

        try:
            self._converse(brief, system_prompt(self.style), propose_prompt(brief, self.cfg.memory_items),
                           accept, lambda: len(kept), brief.n)
        except CallFailed as e:
            self.last_notes.append(f"llm call failed: {e}")
        if not kept and not self.last_notes:
            self.last_notes.append("the model proposed nothing")
        return kept[:brief.n]

    def review(self, brief: Brief, proposals: list[Proposal]) -> list[tuple[bool, str]]:
        """The critic: keep?, why for each proposal; on any failure every proposal is kept."""
        self.last_notes = []
        if not proposals:
            return []
        got: dict[int, tuple[bool, str]] = {}

        def accept(text: str) -> list[str]:
            reviews, bad = check_reviews(text, len(proposals))
            got.update({r.index: (r.keep, r.why) for r in reviews})
            return bad

        try:
            self._converse(brief, system_prompt(self.style or "critic: review proposals against research memory"),
                           review_prompt(brief, proposals, self.cfg.memory_items), accept, lambda: 0, 1)
        except (CallFailed, ResearcherPaused) as e:
            self.last_notes.append(f"review unavailable: {e}")
            return [(True, f"review unavailable: {e}")] * len(proposals)
        return [got.get(i, (True, "not reviewed by the model")) for i in range(len(proposals))]

    # -- conversation: repairs over calls ----------------------------------------------------------------------
    def _converse(self, brief: Brief, system: str, prompt: str, accept: Callable[[str], list[str]],
                  kept: Callable[[], int], want: int) -> None:
        """Ask, validate with `accept` (it keeps what is valid and returns the errors), send the errors back up
        to cfg.repairs times while fewer than `want` items are kept; whatever is still refused is dropped with
        its reason in last_notes. The cost cap pauses only a conversation that has kept nothing yet."""
        messages = [{"role": "user", "content": prompt}]
        for repair in range(self.cfg.repairs + 1):
            try:
                reply = self._call(brief, system, messages)
            except ResearcherPaused as e:
                if not kept():
                    raise
                self.last_notes.append(f"stopped repairing: {e}")
                return
            errors = accept(reply.text)
            self._record(brief, system, messages, reply, "invalid" if errors else "ok", errors)
            if not errors:
                return
            if repair == self.cfg.repairs or kept() >= want:
                self.last_notes.extend(f"dropped: {e}" for e in errors)
                return
            messages = messages + [{"role": "assistant", "content": reply.text},
                                   {"role": "user", "content": repair_message(errors)}]

    # -- one request, with retries ------------------------------------------------------------------------------
    def _call(self, brief: Brief, system: str, messages: list[dict]) -> _Reply:
        for k in range(self.cfg.retries + 1):
            self._check_cap()
            started, t0 = time.time(), time.perf_counter()
            try:
                text, pt, ct = self._send(system, messages)
                return _Reply(text, pt, ct, started, time.perf_counter() - t0, k + 1)
            except Exception as e:  # noqa: BLE001 - every failure is recorded, then retried or reported
                status, retryable, after = _classify(self._sdk, e)
                reply = _Reply("", 0, 0, started, time.perf_counter() - t0, k + 1)
                self._record(brief, system, messages, reply, status, [], error=f"{type(e).__name__}: {e}")
                if not retryable or k == self.cfg.retries:
                    raise CallFailed(f"{status} after {k + 1} attempt(s): {type(e).__name__}: {e}") from None
                self.sleep(max(self.cfg.backoff_s * 2 ** k, min(after or 0.0, MAX_RETRY_AFTER_S)))
        raise AssertionError("unreachable")

    def _params(self) -> dict:
        """The request's parameters, as sent (and as the transcript records them)."""
        cfg = self.cfg
        if cfg.provider == "anthropic":
            return {"model": cfg.model, "max_tokens": cfg.max_tokens}
        size = "max_completion_tokens" if cfg.base_url is None else "max_tokens"  # OpenAI's own API wants the new
        return {"model": cfg.model, "temperature": cfg.temperature, size: cfg.max_tokens}

    def _send(self, system: str, messages: list[dict]) -> tuple[str, int, int]:
        """(text, prompt tokens, completion tokens) of one request to the provider."""
        if self.cfg.provider == "anthropic":
            r = self._client.messages.create(**self._params(), system=system, messages=messages)
            text = "".join(getattr(b, "text", "") for b in r.content if getattr(b, "type", "") == "text")
            u = r.usage
            return text, int(u.input_tokens or 0) if u else 0, int(u.output_tokens or 0) if u else 0
        r = self._client.chat.completions.create(**self._params(),
                                                 messages=[{"role": "system", "content": system}, *messages])
        text = (r.choices[0].message.content or "") if r.choices else ""
        u = r.usage
        return text, int(u.prompt_tokens or 0) if u else 0, int(u.completion_tokens or 0) if u else 0

    # -- accounting -------------------------------------------------------------------------------------------
    def _check_cap(self) -> None:
        tokens, usd = self.store.llm_spent()
        cap_usd, cap_tok = self.budgets.llm_cost_usd, self.budgets.llm_tokens
        if cap_usd is not None and usd >= cap_usd:
            raise ResearcherPaused(f"llm cost cap reached: ${usd:.4f} of ${cap_usd:.4f} "
                                   "(raise budgets.llm_cost_usd in the policy)")
        if cap_tok is not None and tokens >= cap_tok:
            raise ResearcherPaused(f"llm token cap reached: {tokens} of {cap_tok} tokens "
                                   "(raise budgets.llm_tokens in the policy)")

    def _record(self, brief: Brief, system: str, messages: list[dict], reply: _Reply, status: str,
                errors: list[str], error: str | None = None) -> None:
        """One llm_calls row and one transcript file for one attempt."""
        cfg = self.cfg
        cost = (reply.prompt_tokens * cfg.price_in_per_mtok + reply.completion_tokens * cfg.price_out_per_mtok) / 1e6
        path = self._transcript_path(brief.generation)
        body = {"request": {"provider": cfg.provider, "base_url": cfg.base_url, "timeout_s": cfg.timeout_s,
                            "params": self._params(), "system": system, "messages": messages},
                "response": reply.text, "error": error, "status": status, "validation_errors": errors,
                "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens},
                "cost_usd": cost, "started": reply.started, "seconds": reply.seconds, "attempt": reply.attempt,
                "generation": brief.generation, "role": self.role}
        path.write_text(json.dumps(body, indent=1, default=str))
        self.store.add_llm_call(brief.generation, "llm", self.role, cfg.provider, cfg.model, reply.started,
                                reply.seconds, reply.attempt, reply.prompt_tokens, reply.completion_tokens, cost,
                                status, (error or "; ".join(errors) or None), str(path))

    def _transcript_path(self, generation: int) -> Path:
        n = int(self.store.one("SELECT COUNT(*) AS n FROM llm_calls")["n"]) + 1
        tag = f"-{self.role}" if self.role else ""
        while (path := self.transcripts / f"g{generation:04d}-{n:04d}{tag}.json").exists():
            n += 1
        return path


def repair_message(errors: list[str]) -> str:
    return ("Your answer was refused:\n" + "\n".join(f"- {e}" for e in errors) +
            "\nAnswer again with one JSON object in the same format, holding corrected versions of the refused "
            "items only (the accepted ones are kept).")


def _api_key(cfg: LLMConfig) -> str:
    key = os.environ.get(cfg.api_key_env, "")
    if key:
        return key
    if cfg.base_url and urlparse(cfg.base_url).hostname in LOCAL_HOSTS:
        return "local-no-key"  # a local server (Ollama, vLLM, llama.cpp) takes any key
    raise ValueError(f"llm: environment variable {cfg.api_key_env} is not set; it must hold the API key for "
                     f"provider {cfg.provider} (llm.api_key_env names the variable)")


def _make_client(cfg: LLMConfig) -> tuple[Any, Any]:
    """(the SDK module, its client), with the SDK's own retries off: retries and backoff are ours, accounted."""
    key = _api_key(cfg)
    try:
        if cfg.provider == "anthropic":
            import anthropic as sdk
            return sdk, sdk.Anthropic(base_url=cfg.base_url, api_key=key, timeout=cfg.timeout_s, max_retries=0)
        import openai as sdk
        return sdk, sdk.OpenAI(base_url=cfg.base_url, api_key=key, timeout=cfg.timeout_s, max_retries=0)
    except ImportError:
        pkg = "anthropic" if cfg.provider == "anthropic" else "openai"
        raise ValueError(f"llm provider {cfg.provider} needs the {pkg} package (pip install {pkg})") from None


def _classify(sdk: Any, e: Exception) -> tuple[str, bool, float | None]:
    """(status, retryable?, the server's retry-after in seconds) of a failed call."""
    if isinstance(e, sdk.APITimeoutError):
        return "timeout", True, None
    if isinstance(e, sdk.APIConnectionError):
        return "error", True, None
    code = getattr(e, "status_code", None)
    if isinstance(e, sdk.APIStatusError) and code == 429:
        return "rate_limited", True, _retry_after(e.response.headers)
    if isinstance(e, sdk.APIStatusError) and code is not None and code >= 500:
        return "error", True, _retry_after(e.response.headers)
    return "error", False, None


def _retry_after(headers: Any) -> float | None:
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            return float(headers.get(name)) * scale
        except (TypeError, ValueError):
            continue
    return None
