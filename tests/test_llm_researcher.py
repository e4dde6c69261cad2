"""The llm researcher against a loopback server that speaks the OpenAI and Anthropic protocols, through the real
`openai` and `anthropic` clients: parsing, repairs, the allow-list, retries and backoff, accounting, the cost cap."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from successor.config import LLMConfig
from successor.oversight.policy import Budgets
from successor.researchers.base import Brief, Dim, Proposal, ResearcherPaused, Space, Trial
from successor.researchers.llm import LLMResearcher
from successor.store import Store

PROVIDERS = ["openai", "anthropic"]
SOURCE = "import torch\nLR = 0.001\nLAYERS = 2\n"
GOOD_DIFF = "--- a/train.py\n+++ b/train.py\n@@ -1,3 +1,3 @@\n import torch\n-LR = 0.001\n+LR = 0.002\n LAYERS = 2\n"
EVIL_DIFF = "--- a/eval.py\n+++ b/eval.py\n@@ -1 +1 @@\n-score = measure()\n+score = 1.0\n"


# -- the loopback server ---------------------------------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    """Answers each POST with the next scripted reply (status, headers, body, delay) and records the request."""

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        with srv.lock:
            srv.requests.append({"path": self.path, "body": body})
            status, headers, payload, delay = srv.replies.pop(0) if srv.replies else (500, {}, {"error": "empty"}, 0)
        time.sleep(delay)
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            for k, v in {"content-type": "application/json", "content-length": str(len(data)), **headers}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (time-out)
            pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.replies, srv.requests, srv.lock = [], [], threading.Lock()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def ok(provider: str, text: str, pt: int = 1200, ct: int = 300, delay: float = 0.0) -> tuple:
    if provider == "openai":
        body = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}}
    else:
        body = {"id": "m1", "type": "message", "role": "assistant", "model": "m",
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                "usage": {"input_tokens": pt, "output_tokens": ct}}
    return 200, {}, body, delay


def fail(status: int, headers: dict | None = None) -> tuple:
    return status, headers or {}, {"type": "error", "error": {"type": "api_error", "message": f"status {status}"}}, 0


def answer(*proposals: dict) -> str:
    return json.dumps({"proposals": list(proposals)})


def prop(knobs: dict | None = None, diff: str | None = None, why: str = "try it") -> dict:
    return {"knobs": knobs or {}, "diff": diff, "rationale": why, "expected_effect": "loss -0.1"}


# -- fixtures: a brief, a researcher -----------------------------------------------------------------------------
def make_brief(n: int = 2) -> Brief:
    space = Space({"lr": Dim("lr", "float", 1e-3, 1e-4, 1e-1, log=True),
                   "layers": Dim("layers", "int", 2, 1, 8),
                   "opt": Dim("opt", "choice", "adam", choices=("adam", "sgd"))})
    memory = [Trial("t-0001", 1, {"lr": 1e-3, "layers": 2, "opt": "adam"}, "+" * 5000, 0.91, "done",
                    log_tail="epoch 9 loss 0.91", gate_reason="no significant gain", role="explorer"),
              Trial("t-0002", 2, {"lr": 0.1, "layers": 2, "opt": "sgd"}, None, None, "failed",
                    error="loss is nan", log_tail="x" * 5000 + "NaN at step 40")]
    return Brief(3, {"lr": 1e-3, "layers": 2, "opt": "adam"}, 0.90, "val_loss", "minimize", space,
                 {"train.py": SOURCE}, ["train.py"], memory, ["diverges when lr > 0.05"], n, np.random.default_rng(0))


@pytest.fixture
def make(server, tmp_path):
    made = []

    def build(provider: str, budgets: Budgets | None = None, **cfg) -> LLMResearcher:
        port = server.server_address[1]
        url = f"http://127.0.0.1:{port}/v1" if provider == "openai" else f"http://127.0.0.1:{port}"
        fields = {"provider": provider, "model": "test-model", "base_url": url, "api_key_env": "SUCCESSOR_NO_KEY",
                  "timeout_s": 5.0, "retries": 2, "backoff_s": 0.5, "repairs": 2,
                  "price_in_per_mtok": 3.0, "price_out_per_mtok": 15.0, **cfg}
        store, sleeps = Store(tmp_path / "lineage.db"), []
        made.append(store)
        r = LLMResearcher(LLMConfig(**fields), store, tmp_path / "transcripts", budgets or Budgets(),
                          role="explorer", style="explorer: propose bold changes", sleep=sleeps.append)
        r.sleeps = sleeps  # what the researcher waited, in order
        return r

    yield build
    for s in made:
        s.close()


def calls(r: LLMResearcher) -> list[dict]:
    return [dict(row) for row in r.store.q("SELECT * FROM llm_calls ORDER BY id")]


def user_texts(request: dict) -> list[str]:
    return [m["content"] for m in request["body"]["messages"] if m["role"] == "user"]


# -- tests -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("provider", PROVIDERS)
def test_good_proposal_is_typed_accounted_and_transcribed(provider, server, make):
    r = make(provider)
    text = "Here you go:\n```json\n" + answer(prop({"lr": 0.01, "layers": 4.0}, GOOD_DIFF, "raise lr"),
                                              prop({"opt": "sgd"}, None, "plain sgd"),
                                              prop({"layers": 8}, None, "one too many")) + "\n```\nGood luck."
    server.replies.append(ok(provider, text))
    got = r.propose(make_brief(n=2))  # at most n of them
    assert [p.knobs for p in got] == [{"lr": 0.01, "layers": 4, "opt": "adam"}, {"lr": 1e-3, "layers": 2, "opt": "sgd"}]
    assert type(got[0].knobs["layers"]) is int and type(got[0].knobs["lr"]) is float
    assert got[0].diff == GOOD_DIFF and got[1].diff is None
    assert (got[0].rationale, got[0].expected, got[0].role, got[0].researcher) == ("raise lr", "loss -0.1",
                                                                                   "explorer", "llm")
    (req,) = server.requests
    assert req["path"] == ("/v1/chat/completions" if provider == "openai" else "/v1/messages")
    prompt = user_texts(req)[0]
    for needle in ("LR = 0.001", "train.py", "t-0001", "t-0002", "loss is nan", "NaN at step 40", "no significant gain",
                   "diverges when lr > 0.05", "in [0.0001, 0.1] (log scale)", "one of ['adam', 'sgd']",
                   "val_loss = 0.9 (goal: minimize val_loss)", "Propose 2 new candidate(s)"):
        assert needle in prompt, needle
    assert "+" * 1600 not in prompt  # the long diff in memory is cut
    system = req["body"]["system"] if provider == "anthropic" else req["body"]["messages"][0]["content"]
    assert "explorer: propose bold changes" in system
    assert req["body"]["max_tokens"] == 2000 and req["body"]["model"] == "test-model"
    assert req["body"].get("temperature") == (0.7 if provider == "openai" else None)
    (row,) = calls(r)
    assert (row["status"], row["prompt_tokens"], row["completion_tokens"], row["attempt"]) == ("ok", 1200, 300, 1)
    assert row["cost_usd"] == pytest.approx(1200 * 3 / 1e6 + 300 * 15 / 1e6)
    assert (row["generation"], row["researcher"], row["role"], row["provider"], row["model"]) == \
        (3, "llm", "explorer", provider, "test-model")
    path = Path(row["transcript"])
    assert path.name == "g0003-0001-explorer.json"
    saved = json.loads(path.read_text())
    assert "LR = 0.001" in json.dumps(saved["request"]) and saved["response"] == text
    assert saved["usage"] == {"prompt_tokens": 1200, "completion_tokens": 300} and r.last_notes == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_malformed_answers_are_sent_back_with_the_error_then_accepted(provider, server, make):
    r = make(provider)
    server.replies += [ok(provider, "Sure! {proposals: [oops"),
                       ok(provider, json.dumps({"proposals": [{"knobs": {"lr": 0.01}}]})),
                       ok(provider, answer(prop({"lr": 0.02})))]
    got = r.propose(make_brief(n=1))
    assert [p.knobs["lr"] for p in got] == [0.02]
    assert [c["status"] for c in calls(r)] == ["invalid", "invalid", "ok"]
    assert len(server.requests) == 3
    first_repair, second_repair = user_texts(server.requests[1])[-1], user_texts(server.requests[2])[-1]
    assert "not valid JSON" in first_repair
    assert "proposals.0.rationale: Field required" in second_repair
    assert server.requests[1]["body"]["messages"][-2] == {"role": "assistant", "content": "Sure! {proposals: [oops"}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_diff_outside_the_allow_list_is_refused_and_dropped(provider, server, make):
    r = make(provider, repairs=1)
    server.replies += [ok(provider, answer(prop({"layers": 3}), prop({}, EVIL_DIFF, "fix the score"))),
                       ok(provider, answer(prop({}, EVIL_DIFF, "fix the score, really")))]
    got = r.propose(make_brief(n=2))
    assert [p.knobs["layers"] for p in got] == [3] and all(p.diff is None for p in got)
    assert "eval.py: not in the editable allow-list (train.py)" in user_texts(server.requests[1])[-1]
    assert len(server.requests) == 2  # one repair, then dropped
    assert any("dropped" in n and "eval.py" in n for n in r.last_notes), r.last_notes
    assert [c["status"] for c in calls(r)] == ["invalid", "invalid"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_knob_out_of_bounds_or_unknown_is_repaired(provider, server, make):
    r = make(provider)
    server.replies += [ok(provider, answer(prop({"lr": 5.0}), prop({"momentum": 0.9}))),
                       ok(provider, answer(prop({"lr": 0.05}), prop({"opt": "sgd", "layers": 8})))]
    got = r.propose(make_brief(n=2))
    assert [p.knobs for p in got] == [{"lr": 0.05, "layers": 2, "opt": "adam"}, {"lr": 1e-3, "layers": 8, "opt": "sgd"}]
    repair = user_texts(server.requests[1])[-1]
    assert "knob lr: 5.0 is outside [0.0001, 0.1]" in repair and "unknown knob(s) momentum" in repair


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_time_out_is_retried_and_recorded(provider, server, make):
    r = make(provider, timeout_s=0.5, backoff_s=0.25)
    server.replies += [ok(provider, answer(prop({"lr": 0.01})), delay=1.5), ok(provider, answer(prop({"lr": 0.02})))]
    got = r.propose(make_brief(n=1))
    assert [p.knobs["lr"] for p in got] == [0.02]
    rows = calls(r)
    assert [(c["status"], c["attempt"], c["prompt_tokens"]) for c in rows] == [("timeout", 1, 0), ("ok", 2, 1200)]
    assert 0.4 < rows[0]["seconds"] < 1.4 and "Timeout" in rows[0]["error"]
    assert r.sleeps == [0.25] and len(server.requests) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_rate_limits_and_server_errors_back_off_honouring_retry_after(provider, server, make):
    r = make(provider, retries=3, backoff_s=0.5)
    server.replies += [fail(429, {"retry-after": "3"}), fail(429), fail(503), ok(provider, answer(prop({"lr": 0.01})))]
    got = r.propose(make_brief(n=1))
    assert len(got) == 1 and len(server.requests) == 4
    assert r.sleeps == [3.0, 1.0, 2.0]  # retry-after 3 > 0.5; then 0.5 * 2**1, 0.5 * 2**2
    assert [c["status"] for c in calls(r)] == ["rate_limited", "rate_limited", "error", "ok"]
    assert [c["attempt"] for c in calls(r)] == [1, 2, 3, 4]


@pytest.mark.parametrize("status,attempts", [(500, 3), (400, 1)])
def test_a_call_that_keeps_failing_returns_nothing_and_says_why(status, attempts, server, make):
    r = make("openai", retries=2, backoff_s=0.1)
    server.replies += [fail(status)] * 3
    assert r.propose(make_brief()) == []
    assert len(server.requests) == attempts  # a 4xx is not retried
    assert [c["status"] for c in calls(r)] == ["error"] * attempts
    assert r.sleeps == [0.1, 0.2][:attempts - 1]
    assert any(f"after {attempts} attempt(s)" in n and str(status) in n for n in r.last_notes), r.last_notes


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_cost_cap_pauses_before_any_further_call(provider, server, make):
    r = make(provider, budgets=Budgets(llm_cost_usd=0.005))  # one reply costs $0.0081
    server.replies += [ok(provider, answer(prop({"lr": 0.01}), prop({"lr": 500.0}))), ok(provider, answer())]
    got = r.propose(make_brief(n=2))  # the repair would go past the cap: the valid proposal is returned
    assert [p.knobs["lr"] for p in got] == [0.01] and len(server.requests) == 1
    assert any("stopped repairing: llm cost cap reached" in n for n in r.last_notes), r.last_notes
    with pytest.raises(ResearcherPaused, match=r"llm cost cap reached: \$0\.0081 of \$0\.0050 .*budgets\.llm_cost_usd"):
        r.propose(make_brief())
    assert len(server.requests) == 1 and len(calls(r)) == 1


def test_the_token_cap_pauses_too(server, make):
    r = make("openai", budgets=Budgets(llm_tokens=1000))
    r.store.add_llm_call(1, "llm", None, "openai", "m", 0.0, 1.0, 1, 900, 100, 0.0, "ok", None, None)
    server.replies.append(ok("openai", answer(prop())))
    with pytest.raises(ResearcherPaused, match=r"llm token cap reached: 1000 of 1000 tokens .*budgets\.llm_tokens"):
        r.propose(make_brief())
    assert server.requests == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_review_keeps_and_drops_per_the_model(provider, server, make):
    r = make(provider)
    proposals = [Proposal({"lr": 0.01, "layers": 2, "opt": "adam"}, "new lr"),
                 Proposal({"lr": 0.1, "layers": 2, "opt": "sgd"}, "sgd at 0.1 again"),
                 Proposal({"lr": 1e-3, "layers": 5, "opt": "adam"}, "deeper")]
    reviews = {"reviews": [{"index": 0, "keep": True, "why": "untried"}, {"index": 1, "keep": False, "why": "t-0002"}]}
    server.replies.append(ok(provider, json.dumps(reviews)))
    got = r.review(make_brief(), proposals)
    assert got == [(True, "untried"), (False, "t-0002"), (True, "not reviewed by the model")]
    prompt = user_texts(server.requests[0])[0]
    assert "sgd at 0.1 again" in prompt and "loss is nan" in prompt and "proposal 2" in prompt
    assert [c["status"] for c in calls(r)] == ["ok"]


def test_review_unavailable_keeps_everything(server, make):
    r = make("anthropic", retries=0)
    server.replies.append(fail(500))
    got = r.review(make_brief(), [Proposal({}, "a"), Proposal({}, "b")])
    assert [keep for keep, _ in got] == [True, True]
    assert all(why.startswith("review unavailable: error after 1 attempt(s)") for _, why in got), got


def test_a_missing_api_key_is_a_clear_error_except_on_localhost(tmp_path, monkeypatch):
    monkeypatch.delenv("SUCCESSOR_NO_KEY", raising=False)
    store = Store(tmp_path / "lineage.db")
    try:
        for provider, url in (("openai", "https://api.example.com/v1"), ("anthropic", None)):
            cfg = LLMConfig(provider=provider, model="m", base_url=url, api_key_env="SUCCESSOR_NO_KEY")
            with pytest.raises(ValueError, match="SUCCESSOR_NO_KEY is not set"):
                LLMResearcher(cfg, store, tmp_path / "t", Budgets())
        local = LLMConfig(model="m", base_url="http://localhost:11434/v1", api_key_env="SUCCESSOR_NO_KEY")
        assert LLMResearcher(local, store, tmp_path / "t", Budgets()).name == "llm"
    finally:
        store.close()
