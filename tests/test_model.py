"""The tinylm workload: KV-cached decoding, checkpoints, determinism, loss masking and NaN refusal."""
from __future__ import annotations

import copy
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from successor.workloads.tinylm.data import labelled
from successor.workloads.tinylm.tasks import PAD_ID, encode, get_task
from successor.workloads.tinylm import checkpoint
from successor.workloads.tinylm.decode import greedy, greedy_same_level
from successor.workloads.tinylm.model import TinyLM
from successor.workloads.tinylm.recipe import Recipe
from successor.workloads.tinylm.sequences import IGNORE, position_ids, training_batch
from successor.workloads.tinylm.train import Mixture, new_model, train

SCHEMES = ["digit_index", "digit_rope", "learned", "rope", "none"]
TASK = get_task("addition")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(position: str = "digit_index", **kw) -> Recipe:
    base = dict(init="scratch", n_layer=1, n_embd=32, n_head=2, ffn_mult=2, steps=100, lr=3e-3, warmup=0,
                batch_size=24, max_offset=3, position=position, seed=0)
    return Recipe(**(base | kw))


@pytest.fixture(scope="module")
def data():
    return labelled(TASK, [1, 2, 3], 200, np.random.default_rng(0))


@pytest.fixture(scope="module")
def mixture(data):
    return Mixture({"human": data}, {"human": 1.0})


@pytest.fixture(scope="module")
def models(mixture):
    """Per scheme: (random initial model, the same model after 100 training steps, metrics)."""
    out = {}
    for scheme in SCHEMES:
        recipe = tiny(scheme)
        torch.manual_seed(1)
        init = new_model(recipe, max_positions=64)
        trained, metrics = train(TASK, recipe.model_copy(update={"init": "parent"}), mixture,
                                 parent=copy.deepcopy(init), log_every=10)
        out[scheme] = (init, trained, metrics)
    return out


def problems(levels=(1, 2, 3, 4), n=12, seed=5):
    rng = np.random.default_rng(seed)
    return {lvl: TASK.generate(lvl, n, rng) for lvl in levels}


# -- KV cache ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("which", ["random", "trained"])
def test_cached_greedy_equals_reencoding(models, scheme, which):
    init, trained, _ = models[scheme]
    model = init if which == "random" else trained
    tokens = set()
    for offset in (0, 2):
        for lvl, probs in problems().items():
            cached = greedy_same_level(model, TASK, probs, offset=offset, use_cache=True)
            full = greedy_same_level(model, TASK, probs, offset=offset, use_cache=False)
            assert cached == full, (scheme, which, lvl, offset)
            assert all(len(a) == TASK.answer_length(lvl) for a in cached)
            tokens |= set("".join(cached))
    if which == "trained":  # the comparison is only meaningful if the model does not emit one constant token
        assert len(tokens) > 1, f"{scheme}: trained model emits only {tokens}"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_cached_logits_match_full_forward(models, scheme):
    _, model, _ = models[scheme]
    model.eval()
    probs = problems(levels=(3,), n=6)[3]
    offset = 2
    seqs = torch.tensor([encode(p.prompt + TASK.answer(p)) for p in probs])
    B, T = seqs.shape
    P = len(probs[0].prompt)
    pos = torch.tensor(position_ids(TASK, scheme, 3, T, offset)).unsqueeze(0).expand(B, -1)
    with torch.no_grad():
        full, _ = model(seqs, pos)
        logits, cache = model(seqs[:, :P], pos[:, :P])
        torch.testing.assert_close(logits, full[:, :P], atol=1e-5, rtol=1e-5)
        for t in range(P, T):
            step, cache = model(seqs[:, t : t + 1], pos[:, t : t + 1], cache)
            assert step.shape == (B, 1, full.shape[-1])
            torch.testing.assert_close(step[:, 0], full[:, t], atol=1e-5, rtol=1e-5)
    assert cache[0][0].shape[2] == T  # the cache holds every position
    # and the last step's logits differ from the previous step's: the comparison is not trivially equal
    assert not torch.allclose(full[:, -1], full[:, -2])


def test_cached_decoding_refuses_multi_token_step(models):
    _, model, _ = models["learned"]
    seq = torch.tensor([encode("12+34=")])
    pos = torch.arange(6).unsqueeze(0)
    with torch.no_grad():
        _, cache = model(seq, pos)
        with pytest.raises(ValueError):
            model(seq[:, :2], pos[:, :2], cache)


def test_greedy_keeps_input_order_across_levels(models):
    _, model, _ = models["digit_index"]
    by_level = problems(levels=(1, 2, 3), n=5)
    mixed = [by_level[lvl][i] for i in range(5) for lvl in (3, 1, 2)]
    got = greedy(model, TASK, mixed, batch_size=2)
    for p, a in zip(mixed, got):
        assert a == greedy_same_level(model, TASK, [p])[0]


# -- checkpoints ---------------------------------------------------------------------------------------------


def test_checkpoint_round_trip(models, tmp_path):
    _, model, _ = models["digit_rope"]
    d = checkpoint.save(model, tmp_path / "ck", meta={"note": "x"})
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"]
    raw = (d / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])  # safetensors: u64 header length, then a JSON header; no pickle
    header = json.loads(raw[8 : 8 + n])
    assert "tok.weight" in header and "head.weight" not in header
    assert not raw.startswith(b"\x80") and not raw.startswith(b"PK")
    assert json.loads((d / "config.json").read_text())["meta"] == {"note": "x"}

    loaded = checkpoint.load(d)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert loaded.head.weight is loaded.tok.weight  # tying restored
    assert loaded.cfg == model.cfg
    probs = problems(levels=(2, 3), n=8)
    for lvl, ps in probs.items():
        assert greedy_same_level(loaded, TASK, ps, offset=1) == greedy_same_level(model, TASK, ps, offset=1)
    seq = torch.tensor([encode("123+456=")])
    pos = torch.tensor([position_ids(TASK, "digit_rope", 3, 12, 0)[:8]])
    with torch.no_grad():
        assert torch.equal(loaded(seq, pos)[0], model(seq, pos)[0])


def test_digest_stable_and_content_sensitive(models, tmp_path):
    _, model, _ = models["learned"]
    d1 = checkpoint.save(model, tmp_path / "a", meta={"x": 1})
    d2 = checkpoint.save(model, tmp_path / "b", meta={"x": 2})  # meta is not part of the identity
    h = checkpoint.digest(d1)
    assert len(h) == 64 and h == checkpoint.digest(d1) == checkpoint.digest(d2)
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.blocks[0].mlp[0].weight[0, 0] += 1e-3
    d3 = checkpoint.save(changed, tmp_path / "c", meta={"x": 1})
    assert checkpoint.digest(d3) != h
    # the config is part of the identity too
    cfg = json.loads((d2 / "config.json").read_text())
    cfg["model"]["dropout"] = 0.1
    (d2 / "config.json").write_text(json.dumps(cfg))
    assert checkpoint.digest(d2) != h


@pytest.mark.parametrize(
    "change",
    [{"n_embd": 64, "n_head": 2}, {"n_layer": 2}, {"position": "rope"}, {"max_positions": 32},
     {"vocab_size": 20}],
)
def test_load_refuses_config_mismatch(models, tmp_path, change):
    _, model, _ = models["learned"]
    d = checkpoint.save(model, tmp_path / "ck")
    cfg = json.loads((d / "config.json").read_text())
    cfg["model"].update(change)
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not match its config"):
        checkpoint.load(d)


# -- training ------------------------------------------------------------------------------------------------


def test_training_is_deterministic(mixture):
    r = tiny("digit_index", steps=15, seed=3)
    a, ma = train(TASK, r, mixture)
    b, mb = train(TASK, r, mixture)
    c, _ = train(TASK, r.model_copy(update={"seed": 4}), mixture)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert ma["loss_curve"] == mb["loss_curve"]
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_the_trainers_adamw_is_torchs_bit_for_bit_and_spares_the_dynamo_import(mixture, monkeypatch):
    """The trainer's AdamW (successor/workloads/tinylm/optim.py) against torch.optim.AdamW itself: warmup, cosine,
    decayed and undecayed groups, the weight average; and a training process that never imports torch._dynamo."""
    import subprocess
    import sys

    from successor.workloads.tinylm import train as train_module

    r = tiny("digit_index", steps=30, seed=3, warmup=5, weight_decay=0.1, ema=0.9)
    ours, _ = train(TASK, r, mixture)
    monkeypatch.setattr(train_module, "AdamW", torch.optim.AdamW)
    theirs, _ = train(TASK, r, mixture)
    a, b = ours.state_dict(), theirs.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # benchmarks/train_start.py trains in fresh processes and asserts torch._dynamo absent with the trainer's AdamW
    # (and present with torch's, which is what it measures against); a violated assertion exits non-zero
    bench = Path(__file__).parent.parent / "benchmarks" / "train_start.py"
    out = subprocess.run([sys.executable, str(bench), "--pairs", "1"], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [row.split(" | ")[0] for row in out.stdout.splitlines()[2:]] == [
        "| trainer's AdamW", "| torch.optim.AdamW", "| import torch only"]


def test_bf16_training_runs_the_forward_in_bf16_and_keeps_fp32_weights(mixture, monkeypatch):
    r = tiny("digit_index", steps=15, seed=3)
    seen: list[torch.dtype] = []
    forward = TinyLM.forward

    def spy(self, idx, pos, past=None):
        logits, cache = forward(self, idx, pos, past)
        seen.append(logits.dtype)
        return logits, cache

    monkeypatch.setattr(TinyLM, "forward", spy)
    a, ma = train(TASK, r, mixture)
    assert set(seen) == {torch.float32}
    seen.clear()
    b, mb = train(TASK, r.model_copy(update={"precision": "bf16"}), mixture)
    assert seen and set(seen) == {torch.bfloat16}  # the autocast forward, every step
    assert all(v.dtype == torch.float32 for v in b.state_dict().values())  # weights and checkpoint stay fp32
    assert all(math.isfinite(x) for _, x in mb["loss_curve"])
    assert ma["loss_curve"] != mb["loss_curve"]  # another float type: other numbers
    assert mb["loss_curve"][-1][1] < mb["loss_curve"][0][1]  # and it still learns


def held_out_loss(model, scheme, items):
    idx, pos, tgt = training_batch(TASK, scheme, [p for p, _ in items], [y for _, y in items],
                                   np.zeros(len(items), dtype=int))
    with torch.no_grad():
        logits, _ = model(idx, pos)
    return torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), tgt.view(-1),
                                             ignore_index=IGNORE).item()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_answer_loss_goes_down(models, scheme):
    init, trained, metrics = models[scheme]
    curve = [loss for _, loss in metrics["loss_curve"]]
    assert metrics["steps"] == 100 and len(curve) == 11
    assert np.mean(curve[-3:]) < curve[0] - 0.5
    held_out = labelled(TASK, [1, 2, 3], 30, np.random.default_rng(99))
    assert held_out_loss(trained, scheme, held_out) < held_out_loss(init, scheme, held_out) - 0.5


def test_training_batch_masks_prompt_and_padding():
    rng = np.random.default_rng(0)
    probs = [TASK.generate(1, 1, rng)[0], TASK.generate(3, 1, rng)[0], TASK.generate(2, 1, rng)[0]]
    labels = [TASK.answer(p) for p in probs]
    offsets = np.array([0, 4, 2])
    idx, pos, tgt = training_batch(TASK, "digit_index", probs, labels, offsets)
    T = max(len(p.prompt) + len(y) for p, y in zip(probs, labels)) - 1
    assert idx.shape == pos.shape == tgt.shape == (3, T)
    for b, (p, y, off) in enumerate(zip(probs, labels, offsets)):
        seq = encode(p.prompt + y)
        P, n = len(p.prompt), len(seq) - 1
        assert idx[b, :n].tolist() == seq[:-1]
        assert (idx[b, n:] == PAD_ID).all()
        assert pos[b, :n].tolist() == TASK.position_ids(p.level, int(off))[:-1]
        assert (tgt[b, : P - 1] == IGNORE).all()  # prompt tokens are never graded
        assert tgt[b, P - 1 : n].tolist() == encode(y)  # every answer token is, starting at '='
        assert (tgt[b, n:] == IGNORE).all()  # padding is never graded
        assert int((tgt[b] != IGNORE).sum()) == len(y)


def test_train_raises_on_non_finite_loss(mixture):
    recipe = tiny("learned", init="parent", steps=5)
    parent = new_model(recipe)
    with torch.no_grad():
        parent.ln_f.weight[0] = float("nan")
    with pytest.raises(FloatingPointError, match="step 0"):
        train(TASK, recipe, mixture, parent=parent)


def test_unknown_position_scheme_refused():
    with pytest.raises(ValueError):
        position_ids(TASK, "alibi", 1, 6)
    from successor.workloads.tinylm.model import ModelConfig, TinyLM

    with pytest.raises(ValueError):
        TinyLM(ModelConfig(vocab_size=16, n_embd=32, n_head=2, position="alibi"))


def test_learned_positions_refuse_overflow():
    from successor.workloads.tinylm.model import ModelConfig, TinyLM

    m = TinyLM(ModelConfig(vocab_size=16, n_layer=1, n_embd=32, n_head=2, position="learned", max_positions=8))
    with pytest.raises(ValueError, match="max_positions"):
        m(torch.zeros((1, 9), dtype=torch.long), torch.arange(9).unsqueeze(0))


def test_ema_model_is_the_moving_average_of_the_weights_step_by_step(mixture):
    """With a constant schedule, k steps of training are the first k steps of a longer run, so the EMA the
    trainer keeps can be recomputed from the weights after 1, 2, ... N steps."""
    base = tiny("digit_index", steps=4, seed=5, schedule="constant", warmup=0)
    weights = [train(TASK, base.model_copy(update={"steps": k}), mixture)[0].state_dict() for k in range(1, 5)]
    decay = 0.6
    expected = {k: v.clone() for k, v in weights[0].items()}  # the average starts at the first step's weights
    for w in weights[1:]:
        for k in expected:
            expected[k] = decay * expected[k] + (1 - decay) * w[k]
    averaged, _ = train(TASK, base.model_copy(update={"ema": decay}), mixture)
    got = averaged.state_dict()
    for k in expected:
        assert torch.allclose(got[k], expected[k], atol=1e-6), k
    assert any(not torch.allclose(got[k], weights[-1][k]) for k in got)  # not the last step's weights


def test_sequence_loss_weighs_each_example_the_same():
    from successor.workloads.tinylm.train import answer_loss
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    tgt = torch.tensor([[IGNORE, 1, 2, 3, 4], [IGNORE, IGNORE, IGNORE, 5, IGNORE]])  # 4 graded tokens vs 1
    per_token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=IGNORE,
                                                  reduction="none")
    first, second = per_token[0, 1:].mean(), per_token[1, 3]
    assert torch.allclose(answer_loss(logits, tgt, "sequence"), (first + second) / 2)
    assert torch.allclose(answer_loss(logits, tgt, "token"), (per_token[0, 1:].sum() + second) / 5)
    same_length = torch.tensor([[IGNORE, 1, 2, 3, 4], [IGNORE, 5, 6, 0, 1]])
    assert torch.allclose(answer_loss(logits, same_length, "sequence"), answer_loss(logits, same_length, "token"))


def test_schedule_steps_stops_a_longer_schedule_early(mixture):
    """Training `steps` of a schedule laid out over `schedule_steps` is the start of the longer run, bit for bit:
    the default bootstrap stops at 2,500 of a 3,000-step cosine and keeps the model the longer run passes."""
    from successor.workloads.tinylm.train import lr_at
    full = tiny("digit_index", steps=8, seed=2, warmup=2)
    short = full.model_copy(update={"steps": 5, "schedule_steps": 8})
    assert [lr_at(s, short) for s in range(5)] == [lr_at(s, full) for s in range(5)]
    assert lr_at(4, short) > lr_at(4, full.model_copy(update={"steps": 5}))  # its own 5-step cosine decays sooner
    a, ma = train(TASK, short, mixture, log_every=1)
    b, mb = train(TASK, full, mixture, log_every=1)
    assert ma["loss_curve"] == mb["loss_curve"][:5]  # same batches, same learning rates: the same first 5 steps
    c, _ = train(TASK, full.model_copy(update={"steps": 5}), mixture)
    assert any(not torch.equal(a.state_dict()[k], c.state_dict()[k]) for k in a.state_dict())


def test_schedule_steps_shorter_than_steps_refused():
    with pytest.raises(ValueError, match="schedule_steps"):
        Recipe(steps=10, schedule_steps=9)


def test_decoded_once_decodes_each_answer_once_and_gives_the_same_answers(monkeypatch):
    """The curate stage asks a model for the same answers several times; inside `decoded_once` each (model,
    offset, problem) is decoded once, the answers are those of a plain decode, and outside the block every call
    decodes again."""

    from successor.workloads.tinylm import decode as dec
    from successor.workloads.tinylm.model import ModelConfig
    from successor.workloads.tinylm.tasks import VOCAB_SIZE

    torch.manual_seed(0)
    task = get_task("addition")
    model, other = (TinyLM(ModelConfig(vocab_size=VOCAB_SIZE, n_layer=1, n_embd=32, n_head=2)) for _ in range(2))
    probs = task.generate(3, 30, np.random.default_rng(1)) + task.generate(5, 20, np.random.default_rng(2))
    plain = dec.greedy(model, task, probs)
    decoded = []
    inner = dec.greedy_same_level
    monkeypatch.setattr(dec, "greedy_same_level", lambda m, t, ps, *a: decoded.extend(ps) or inner(m, t, ps, *a))
    with dec.decoded_once():
        assert dec.greedy(model, task, probs[:40]) == plain[:40]
        assert len(decoded) == 40
        assert dec.greedy(model, task, probs) == plain and len(decoded) == 50  # only the 10 new ones
        assert dec.greedy(model, task, probs[::-1]) == plain[::-1] and len(decoded) == 50
        with dec.decoded_once():  # nested: the same memo
            assert dec.greedy(model, task, probs[:5]) == plain[:5] and len(decoded) == 50
        dec.greedy(model, task, probs[:5], offset=2)  # another offset is another answer
        dec.greedy(other, task, probs[:5])  # another model too
        assert len(decoded) == 60
    dec.greedy(model, task, probs[:5])
    assert len(decoded) == 65  # outside the block nothing is remembered
