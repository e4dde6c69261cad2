"""A batch trained as rows of examples packed end to end (`Recipe.pack`): every example keeps its own tokens,
positions and targets, attends only to itself, and the loss and its gradients are those of the padded batch up to
rounding, computed over far fewer padded tokens."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from successor.workloads.tinylm.data import labelled
from successor.workloads.tinylm.recipe import Recipe
from successor.workloads.tinylm.sequences import IGNORE, packed_batch, training_batch
from successor.workloads.tinylm.tasks import PAD_ID, get_task
from successor.workloads.tinylm.train import Mixture, answer_loss, new_model, train

TASK = get_task("addition")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rows_of(levels: list[int], n: int, seed: int = 1):
    rows = labelled(TASK, levels, n, np.random.default_rng(seed))
    offsets = np.random.default_rng(seed + 1).integers(0, 4, len(rows))
    return [p for p, _ in rows], [y for _, y in rows], offsets


def test_packing_keeps_every_example_whole_in_fewer_rows():
    probs, labels, offsets = rows_of([1, 2, 3, 8, 14, 20], 8)
    idx, pos, tgt = training_batch(TASK, "digit_index", probs, labels, offsets)
    pidx, ppos, ptgt, seg = packed_batch(TASK, "digit_index", probs, labels, offsets)
    assert pidx.shape[1] == idx.shape[1]  # rows as long as the longest example
    assert pidx.shape[0] < 0.75 * idx.shape[0]  # 48 examples in far fewer rows
    assert int((pidx != PAD_ID).sum()) == int((idx != PAD_ID).sum())  # no token lost, none doubled
    assert sorted(set(seg.flatten().tolist())) == [-1] + list(range(len(probs)))
    assert bool((pidx[seg < 0] == PAD_ID).all()) and bool((ptgt[seg < 0] == IGNORE).all())
    for i in range(len(probs)):  # example i, found by its segment id, is row i of the padded batch
        n = int((idx[i] != PAD_ID).sum())
        where = seg == i
        assert int(where.sum()) == n
        assert torch.equal(pidx[where], idx[i, :n]) and torch.equal(ppos[where], pos[i, :n])
        assert torch.equal(ptgt[where], tgt[i, :n])
        b = int(where.any(1).nonzero()[0])  # one row, contiguous
        cols = where[b].nonzero().flatten()
        assert int(cols[-1] - cols[0]) + 1 == n


@pytest.mark.parametrize("scheme", ["digit_index", "digit_rope", "learned", "none"])
@pytest.mark.parametrize("per", ["token", "sequence"])
def test_packed_loss_and_gradients_are_the_padded_batchs(scheme, per):
    torch.manual_seed(0)
    model = new_model(Recipe(init="scratch", n_layer=2, n_embd=32, n_head=2, ffn_mult=2, seed=0, position=scheme))
    probs, labels, offsets = rows_of([1, 2, 3, 7, 9], 6)

    def grads(packed: bool) -> tuple[float, list[torch.Tensor]]:
        model.zero_grad()
        if packed:
            idx, pos, tgt, seg = packed_batch(TASK, scheme, probs, labels, offsets)
            loss = answer_loss(model(idx, pos, segments=seg)[0], tgt, per, seg)
        else:
            idx, pos, tgt = training_batch(TASK, scheme, probs, labels, offsets)
            loss = answer_loss(model(idx, pos)[0], tgt, per)
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in model.parameters()]

    padded, g0 = grads(False)
    packed, g1 = grads(True)
    assert packed == pytest.approx(padded, rel=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(g0, g1))
    # every example's logits are its padded row's; the mask is what makes it so (without it, examples packed
    # into one row see each other)
    idx, pos, _ = training_batch(TASK, scheme, probs, labels, offsets)
    pidx, ppos, _, seg = packed_batch(TASK, scheme, probs, labels, offsets)
    with torch.no_grad():
        alone, masked, leaky = model(idx, pos)[0], model(pidx, ppos, segments=seg)[0], model(pidx, ppos)[0]
    for i in range(len(probs)):
        n = int((idx[i] != PAD_ID).sum())
        assert torch.allclose(masked[seg == i], alone[i, :n], atol=1e-5)
    shared = [i for i in range(len(probs)) if int((seg == i).nonzero()[0, 1]) > 0]  # not first in its row
    assert shared and not any(
        torch.allclose(leaky[seg == i], alone[i, :int((idx[i] != PAD_ID).sum())], atol=1e-5) for i in shared)


def test_training_packed_draws_the_same_batches_and_lands_close():
    human = labelled(TASK, [1, 2, 3], 100, np.random.default_rng(0))
    long = labelled(TASK, [8, 9], 100, np.random.default_rng(1))
    mix = lambda: Mixture({"human": human, "newest": long}, {"human": 0.5, "newest": 0.5})  # noqa: E731
    r = dict(init="scratch", n_layer=1, n_embd=32, n_head=2, ffn_mult=2, steps=30, lr=3e-3, warmup=0,
             batch_size=24, max_offset=3, seed=0, loss="sequence")
    _, a = train(TASK, Recipe(**r), mix(), log_every=1)
    _, b = train(TASK, Recipe(**r, pack=True), mix(), log_every=1)
    assert a["tokens"] == b["tokens"]  # the same rows were drawn: real tokens are counted, never padding
    la, lb = [x[1] for x in a["loss_curve"]], [x[1] for x in b["loss_curve"]]
    assert la[0] == pytest.approx(lb[0], rel=1e-5)  # the first step's loss is the same batch's
    assert np.allclose(la, lb, rtol=2e-2)  # then rounding may part them, a little


def test_packing_refuses_what_it_cannot_mean():
    with pytest.raises(ValueError, match="choose one"):
        Recipe(pack=True, length_buckets=2)
    model = new_model(Recipe(init="scratch", n_layer=1, n_embd=16, n_head=2, ffn_mult=1))
    probs, labels, offsets = rows_of([2, 3], 2)
    idx, pos, _, seg = packed_batch(TASK, "digit_index", probs, labels, offsets)
    _, cache = model(idx, pos)
    with pytest.raises(ValueError, match="cached decoding"):
        model(idx[:, :1], pos[:, :1], past=cache, segments=seg[:, :1])


def test_the_incumbent_recipe_runs_in_the_configs_batch_layout(tmp_path):
    """The recipe that made the champion carries over to its successor, but how a batch is computed follows the
    config: a run resumed or forked with `successor.pack: true` trains packed (before, a fork after generation 1
    ran its source's layout whatever its config said)."""
    from types import SimpleNamespace

    import successor
    from successor.store import Store
    from successor.workloads.tinylm.workload import TinyLMWorkload

    store = Store(tmp_path / "lineage.db")
    promoted = Recipe(steps=750, lr=3e-4, ema=0.99, length_buckets=3, seed=11)
    store.x("INSERT INTO candidates VALUES(?,?,?,?,?,?,?)", "g1c0", 1, 0, promoted.model_dump_json(), "k", "why",
            "parent-model")
    store.x("INSERT INTO gate_decisions(generation, candidate_id, model, role, promoted, reason) "
            "VALUES(1, 'g1c0', 'champ', 'successor', 1, 'gain')")
    cfg = successor.load_config(preset="smoke")
    for layout in ({"pack": True, "length_buckets": 1}, {"pack": False, "length_buckets": 2, "precision": "bf16"}):
        cfg = cfg.model_copy(update={"successor": cfg.successor.model_copy(update=layout)})
        got = TinyLMWorkload.incumbent(SimpleNamespace(store=store, cfg=cfg), "champ")
        assert got.model_dump() == promoted.model_dump() | {"precision": "fp32"} | layout  # the rest is the champion's
    # no promoted successor yet: the config's own recipe
    assert TinyLMWorkload.incumbent(SimpleNamespace(store=store, cfg=cfg), "other") == cfg.successor
    store.close()


def test_a_loop_generation_trains_its_successor_packed(tmp_path):
    """The smoke preset with `successor.pack: true` (the default preset packs): the successor's job carries the
    layout, it trains, and the generation ends with the gate's decision."""
    import json
    import sqlite3

    import successor
    from successor.config import RunConfig, validated

    cfg = successor.load_config(preset="smoke").model_dump(mode="json", exclude={"script"})
    cfg["successor"]["pack"] = True
    cfg["loop"] |= {"generations": 1, "bootstrap_attempts": 1}
    assert successor.load_config(preset="default").successor.pack is True
    result = successor.run(validated(RunConfig, cfg), tmp_path / "run",
                           policy=successor.Policy.model_validate({"tripwires": {"integrity_violation": False}}))
    assert result.finished
    db = sqlite3.connect(tmp_path / "run" / "lineage.db")
    (job_id, status), = db.execute("SELECT id, status FROM experiments WHERE generation=1 AND kind='successor'")
    assert status == "done"
    job = json.loads((tmp_path / "run" / "jobs" / f"{job_id}.json").read_text())
    assert job["recipe"]["pack"] is True
    assert db.execute("SELECT COUNT(*) FROM gate_decisions WHERE generation=1").fetchone()[0] >= 1
