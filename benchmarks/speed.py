"""Scale and speed (issue 6): what the tinylm trainer and decoder cost on this machine, each against a reference.

1. Trainer throughput: tokens/s of `successor.workloads.tinylm.train.train` against a minimal hand-written PyTorch
   loop of the same TinyLM (the step's batch tensors built the simplest way, AdamW, cross-entropy on answer
   tokens; no mixture, schedule, clipping, EMA or loss curve), on the same recipe and the same batches: the
   minimal loop is fed the problems and offsets the trainer's own random stream draws (drawn beforehand, outside
   its timing, so their sampling is charged to the trainer only). Tokens are non-pad input tokens, counted the
   same way by both. The two alternate (A,B then B,A) over several repetitions; the ratio is taken within each
   repetition and its median reported, as the machine is shared and noisy.
2. Model FLOP/s of the trainer (`flops.train_flops`, the harness's own formula) as a fraction of a measured fp32
   matmul peak: torch.mm of square fp32 matrices at the same thread count, best of several.
3. Decoding: `decode.greedy_same_level` with the KV cache against naive re-encoding, at 10-, 20- and 40-digit
   answers, on an untrained model (the cost does not depend on the weights); both must decode identical answers.

    .venv/bin/python benchmarks/speed.py --report      # the full run: writes results/speed.json and BENCHMARKS.md
    .venv/bin/python benchmarks/speed.py --quick       # tiny sizes, seconds; touches neither (unless --report)
    .venv/bin/python benchmarks/speed.py --quick --json /tmp/speed.json   # also the raw results to a path

Numbers are measured each run, never typed in. The section in BENCHMARKS.md sits between the markers below.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from successor.workloads.tinylm.decode import greedy_same_level
from successor.workloads.tinylm.flops import train_flops
from successor.workloads.tinylm.model import ModelConfig, TinyLM
from successor.workloads.tinylm.recipe import Recipe
from successor.workloads.tinylm.sequences import IGNORE, training_batch
from successor.workloads.tinylm.tasks import PAD_ID, VOCAB_SIZE, Problem, Task, encode, get_task
from successor.workloads.tinylm.train import Mixture, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from markdown import write_section  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
TRAIN_GOAL = 0.9  # ours / minimal tokens/s
DECODE_GOAL = (20, 5.0)  # at 20-digit answers, cached at least 5x faster than re-encoding
DECODE_DIGITS = (10, 20, 40)
WEIGHT_STD = 0.3  # the decoding model's random weights

FULL = {"per_level": 2000, "steps": 40, "reps": 12, "warmup_steps": 10, "matmul_n": 2048, "matmul_reps": 5,
        "decode_batch": 64, "decode_reps": 3}
QUICK = {"per_level": 64, "steps": 4, "reps": 2, "warmup_steps": 2, "matmul_n": 256, "matmul_reps": 3,
         "decode_batch": 8, "decode_reps": 1}


# -- machine ---------------------------------------------------------------------------------------------------
def machine(threads: int) -> dict:
    cpu, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not cpu:
                cpu = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    cpu = cpu or platform.processor() or platform.machine()
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "other"
    return {"cpu": cpu, "simd": simd, "cores": os.cpu_count(), "gpu": torch.cuda.is_available(),
            "torch": torch.__version__, "threads": threads, "python": platform.python_version(),
            "load_start": [round(x, 2) for x in os.getloadavg()]}


# -- 1. trainer throughput -------------------------------------------------------------------------------------
def the_recipe(steps: int) -> Recipe:
    """The bootstrap's recipe at the default successor size (4 layers, d=128, batch 64, digit-index positions,
    offsets 0-20), human data only, no guardrail or EMA (the bootstrap's first 2,000 steps)."""
    return Recipe(init="scratch", steps=steps, mix_newest=0.0, mix_human=1.0, batch_size=64, seed=0)


def human_data(task: Task, per_level: int, seed: int = 1) -> list[tuple[Problem, str]]:
    rng = np.random.default_rng(seed)
    return [(p, task.answer(p)) for level in range(1, 9) for p in task.generate(level, per_level, rng)]


def draw_schedule(recipe: Recipe, sources: dict) -> list[tuple[list[tuple[Problem, str]], np.ndarray]]:
    """The rows and offsets train() draws at each step, from its own random stream in its own order (it has no
    guardrail here, so nothing else draws from that stream)."""
    assert not recipe.guardrail_share, "the schedule does not replay the guardrail's rows"
    rng, mixture = np.random.default_rng(recipe.seed), Mixture.of(recipe, sources)
    out = []
    for _ in range(recipe.steps):
        rows = mixture.sample(recipe.batch_size, rng)
        out.append((rows, rng.integers(0, recipe.max_offset + 1, size=len(rows))))
    return out


def minimal_batch(task: Task, rows: list[tuple[Problem, str]], offsets) -> tuple[torch.Tensor, ...]:
    """The step's (inputs, positions, targets), right-padded, loss on answer tokens: plain lists, one tensor each."""
    seqs = [encode(p.prompt + y) for p, y in rows]
    poss = [task.position_ids(p.level, int(o), p.marked) for (p, _), o in zip(rows, offsets)]
    T = max(map(len, seqs)) - 1
    idx = [s[:-1] + [PAD_ID] * (T + 1 - len(s)) for s in seqs]
    pos = [q[:-1] + [0] * (T + 1 - len(q)) for q in poss]
    tgt = [[IGNORE] * (len(p.prompt) - 1) + s[len(p.prompt):] + [IGNORE] * (T + 1 - len(s))
           for (p, _), s in zip(rows, seqs)]
    return torch.tensor(idx), torch.tensor(pos), torch.tensor(tgt)


def minimal_loop(task: Task, recipe: Recipe, schedule) -> tuple[int, list[float]]:
    """A hand-written training loop of the same model: the tokens it trained on, and the end time of each step."""
    torch.manual_seed(recipe.seed)
    cfg = ModelConfig(vocab_size=VOCAB_SIZE, n_layer=recipe.n_layer, n_embd=recipe.n_embd, n_head=recipe.n_head,
                      ffn_mult=recipe.ffn_mult, dropout=recipe.dropout, position=recipe.position)
    model = TinyLM(cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.98), weight_decay=recipe.weight_decay)
    tokens, ends = 0, []
    for rows, offsets in schedule:
        idx, pos, tgt = minimal_batch(task, rows, offsets)
        logits, _ = model(idx, pos)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1), ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tokens += int((idx != PAD_ID).sum())
        ends.append(time.perf_counter())
    return tokens, ends


def ours_loop(task: Task, recipe: Recipe, sources: dict) -> tuple[int, list[float]]:
    """train.train as the loop runs it: the tokens it reports, and the end time of each step (from its progress
    callback at log_every=1: a loss.item() and a list append a step more than the default log_every=50)."""
    ends: list[float] = []
    _, metrics = train(task, recipe, Mixture.of(recipe, sources), log_every=1,
                       progress=lambda step, total, loss, curve: ends.append(time.perf_counter()))
    return metrics["tokens"], ends


def timed(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def timed_cpu(fn, *args) -> tuple[float, float, object]:
    """Wall and process CPU seconds (all threads) of one call: CPU time suffers less from other work's load."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, time.process_time() - c0, out


def throughput(task: Task, s: dict) -> dict:
    sources = {"human": human_data(task, s["per_level"])}
    recipe = the_recipe(s["steps"])
    schedule = draw_schedule(recipe, sources)
    # the minimal batch is the trainer's batch: same tokens, positions and targets
    same = all(all(torch.equal(a, b) for a, b in zip(
        minimal_batch(task, rows, offs), training_batch(task, recipe.position, [r[0] for r in rows],
                                                        [r[1] for r in rows], offs))) for rows, offs in schedule)
    if not same:
        raise SystemExit("the minimal loop's batches differ from the trainer's: the comparison would be unfair")
    warm = the_recipe(s["warmup_steps"])  # first calls in a process pay for allocation and kernel set-up
    ours_loop(task, warm, sources)
    minimal_loop(task, warm, draw_schedule(warm, sources))
    runs = {"ours": [], "minimal": []}
    for rep in range(s["reps"]):
        order = ("ours", "minimal") if rep % 2 == 0 else ("minimal", "ours")
        for name in order:
            wall, cpu, (tok, ends) = (timed_cpu(ours_loop, task, recipe, sources) if name == "ours"
                                      else timed_cpu(minimal_loop, task, recipe, schedule))
            runs[name].append({"wall_s": wall, "cpu_s": cpu, "tokens": tok, "tokens_per_s": tok / wall,
                               "step_s": np.diff(ends).tolist()})  # steps 1.. (step 0 includes set-up)
        print(f"  rep {rep + 1}/{s['reps']}: ours {runs['ours'][-1]['tokens_per_s']:.0f} tok/s, minimal "
              f"{runs['minimal'][-1]['tokens_per_s']:.0f} tok/s", flush=True)
    ratios = [o["tokens_per_s"] / m["tokens_per_s"] for o, m in zip(runs["ours"], runs["minimal"])]
    cpu_ratios = [m["cpu_s"] / o["cpu_s"] for o, m in zip(runs["ours"], runs["minimal"])]
    per_step = [(int((minimal_batch(task, rows, offs)[0] != PAD_ID).sum()), len(max(
        (encode(p.prompt + y) for p, y in rows), key=len)) - 1) for rows, offs in schedule]
    med = statistics.median(ratios)
    # Step-wise: step k trains the same batch in both loops; its fastest time over the repetitions is the one
    # least touched by other work on the machine. Summed over the steps, in both loops' tokens of those steps.
    fastest = {n: np.min([r["step_s"] for r in runs[n]], axis=0) for n in runs}
    stepwise = float(fastest["minimal"].sum() / fastest["ours"].sum())
    return {
        "recipe": recipe.model_dump(), "data": f"addition levels 1-8, {s['per_level']} problems each",
        "steps": s["steps"], "reps": s["reps"], "batch_tensors_identical": same,
        "tokens_equal": all(o["tokens"] == m["tokens"] for o, m in zip(runs["ours"], runs["minimal"])),
        "tokens_per_run": runs["ours"][0]["tokens"], "padded_tokens_per_run": sum(recipe.batch_size * T
                                                                                  for _, T in per_step),
        "per_step": per_step, "ours": runs["ours"], "minimal": runs["minimal"],
        "ours_tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs["ours"]),
        "minimal_tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs["minimal"]),
        "ratios": ratios, "ratio": med, "cpu_ratios": cpu_ratios, "cpu_ratio": statistics.median(cpu_ratios),
        "stepwise_ratio": stepwise, "stepwise_ms": {n: float(np.median(v) * 1e3) for n, v in fastest.items()},
        "goal": TRAIN_GOAL, "met": med >= TRAIN_GOAL, "stepwise_met": stepwise >= TRAIN_GOAL,
    }


# -- 2. FLOP/s -------------------------------------------------------------------------------------------------
def matmul_peak(n: int, reps: int) -> dict:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    walls = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        walls.append(time.perf_counter() - t0)
    return {"n": n, "reps": reps, "walls_s": walls, "gflops": 2.0 * n**3 / min(walls) / 1e9}


def model_flops(tp: dict, peak: dict) -> dict:
    r = tp["recipe"]
    cfg = ModelConfig(vocab_size=VOCAB_SIZE, n_layer=r["n_layer"], n_embd=r["n_embd"], n_head=r["n_head"],
                      ffn_mult=r["ffn_mult"], position=r["position"])
    # the formula per step: that step's non-pad tokens, in sequences of the step's padded length (what the
    # attention kernel computes)
    per_run = sum(train_flops(cfg, tokens, T) for tokens, T in tp["per_step"])
    walls = [x["wall_s"] for x in tp["ours"]]
    gflops = per_run / statistics.median(walls) / 1e9
    return {"flops_per_run": per_run, "flops_per_token": per_run / tp["tokens_per_run"],
            "ours_gflops": gflops, "peak_gflops": peak["gflops"], "fraction_of_peak": gflops / peak["gflops"],
            "matmul": peak, "formula": "successor.workloads.tinylm.flops.train_flops(cfg, tokens, seq_len)"}


# -- 3. decoding -----------------------------------------------------------------------------------------------
def level_for(task: Task, digits: int) -> int:
    """The level whose answer is `digits` long, or the closest."""
    return min(range(1, 200), key=lambda lvl: (abs(task.answer_length(lvl) - digits), lvl))


def decoding(task: Task, s: dict, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=VOCAB_SIZE)  # the default: 4 layers, d=128, digit_index, max_positions 128
    model = TinyLM(cfg).eval()
    # Random weights at a wider spread than the init's 0.02, which decodes one token everywhere and would make the
    # identity check below vacuous; the cost of decoding does not depend on the weights.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, WEIGHT_STD)
    rng = np.random.default_rng(seed)
    rows = []
    for digits in DECODE_DIGITS:
        level = level_for(task, digits)
        A = task.answer_length(level)
        top = max(task.position_ids(level, 0))
        if top >= cfg.max_positions:
            raise SystemExit(f"level {level} needs position {top}, over max_positions {cfg.max_positions}")
        problems = task.generate(level, s["decode_batch"], rng)
        greedy_same_level(model, task, problems[:2], use_cache=True)  # warm-up at this shape
        greedy_same_level(model, task, problems[:2], use_cache=False)
        cached, naive, identical = [], [], True
        for rep in range(s["decode_reps"]):
            for use_cache in ((True, False) if rep % 2 == 0 else (False, True)):
                wall, out = timed(greedy_same_level, model, task, problems, 0, use_cache)
                (cached if use_cache else naive).append((wall * 1000, out))
            identical &= cached[-1][1] == naive[-1][1]
        if not identical:
            raise SystemExit(f"cached and naive decoding disagree at {A} digits: the speed-up would be meaningless")
        c, n = statistics.median(w for w, _ in cached), statistics.median(w for w, _ in naive)
        answers = cached[0][1]
        rows.append({"digits": digits, "level": level, "answer_length": A, "prompt_length": len(problems[0].prompt),
                     "max_position": top, "cached_ms": [w for w, _ in cached], "naive_ms": [w for w, _ in naive],
                     "cached_ms_median": c, "naive_ms_median": n, "speedup": n / c, "identical": identical,
                     "answers_checked": len(answers) * s["decode_reps"], "distinct_answers": len(set(answers)),
                     "distinct_tokens": len(set("".join(answers)))})
        print(f"  {A} digits: cached {c:.1f} ms, naive {n:.1f} ms", flush=True)
    at = next(r for r in rows if r["digits"] == DECODE_GOAL[0])
    return {"batch": s["decode_batch"], "reps": s["decode_reps"], "model": cfg.to_dict(), "weight_std": WEIGHT_STD,
            "rows": rows,
            "goal": {"digits": DECODE_GOAL[0], "speedup": DECODE_GOAL[1]},
            "met": at["speedup"] >= DECODE_GOAL[1]}


# -- tables ----------------------------------------------------------------------------------------------------
def yes(b: bool) -> str:
    return "**met**" if b else "**not met**"


def tables(res: dict) -> str:
    m, tp, fl, dc = res["machine"], res["throughput"], res["flops"], res["decoding"]
    r = tp["recipe"]
    head = (f"Machine: {m['cpu']} ({m['simd']}), {m['cores']} cores, {'a' if m['gpu'] else 'no'} GPU, torch "
            f"{m['torch']}, fp32, `torch.set_num_threads({m['threads']})`; shared with other work (load average "
            f"{m['load_start'][0]:.1f} at the start, {m['load_end'][0]:.1f} at the end, over {res['wall_s']:.0f} s), so "
            f"walls are upper bounds and the ratios (taken within each repetition) are what to read. Command: "
            f"`{res['command']}`"
            + (" (**quick**: tiny sizes, not a measurement to quote)" if res["quick"] else "") + ".")
    t1 = [f"**Trainer throughput**: {r['n_layer']} layers, d={r['n_embd']}, {r['n_head']} heads, batch "
          f"{r['batch_size']}, `{r['position']}` positions, offsets 0-{r['max_offset']}, {tp['data']}; "
          f"{tp['steps']} steps a run, {tp['reps']} repetitions alternating the two loops; tokens are non-pad input "
          f"tokens ({tp['tokens_per_run']:,} a run, equal in both: {'yes' if tp['tokens_equal'] else 'NO'}; "
          f"{tp['padded_tokens_per_run']:,} with padding). Goal: ours >= {tp['goal']}x the minimal loop: "
          f"{yes(tp['met'])}.", "",
          "| loop | tokens/s (median) | tokens/s per repetition | wall s per run (median) | CPU s per run (median) |",
          "|---|---|---|---|---|"]
    for name, label in (("ours", "ours: `train.train`"), ("minimal", "minimal hand-written loop")):
        runs = tp[name]
        t1.append(f"| {label} | {tp[name + '_tokens_per_s']:,.0f} | "
                  f"{', '.join(format(x['tokens_per_s'], ',.0f') for x in runs)} | "
                  f"{statistics.median(x['wall_s'] for x in runs):.2f} | "
                  f"{statistics.median(x['cpu_s'] for x in runs):.2f} |")
    t1.append(f"| **ratio ours/minimal** | **{tp['ratio']:.3f}** | {', '.join(f'{x:.3f}' for x in tp['ratios'])} | | "
              f"{tp['cpu_ratio']:.3f} (minimal/ours CPU s, median of {', '.join(f'{x:.3f}' for x in tp['cpu_ratios'])}) |")
    t1 += ["", f"Step by step (step k trains the same batch in both loops; each step's fastest time over the "
               f"{tp['reps']} repetitions, summed over steps 2-{tp['steps']}): ours/minimal tokens/s "
               f"**{tp['stepwise_ratio']:.3f}** ({yes(tp['stepwise_met'])}); median fastest step "
               f"{tp['stepwise_ms']['ours']:.1f} ms ours, {tp['stepwise_ms']['minimal']:.1f} ms minimal. Ours runs "
               f"with a progress callback at log_every=1 to time its steps."]
    mm = fl["matmul"]
    t2 = [f"**Model FLOP/s** of our trainer (`flops.train_flops`, {fl['flops_per_token'] / 1e6:.2f} MFLOP per "
          f"non-pad token on this data) against the measured fp32 matmul peak (`torch.mm` of {mm['n']}x{mm['n']} "
          f"fp32, best of {mm['reps']}, {m['threads']} threads).", "",
          "| ours: model GFLOP/s | matmul peak GFLOP/s | fraction of peak |", "|---|---|---|",
          f"| {fl['ours_gflops']:.1f} | {fl['peak_gflops']:.1f} | {fl['fraction_of_peak']:.1%} |"]
    md = dc["model"]
    t3 = [f"**Decoding**: `decode.greedy_same_level`, batch {dc['batch']}, an untrained TinyLM ({md['n_layer']} "
          f"layers, d={md['n_embd']}, `{md['position']}` positions, max_positions {md['max_positions']}: the positions "
          f"of a 40-digit answer reach {dc['rows'][-1]['max_position']}; weight matrices drawn at std "
          f"{dc['weight_std']}, so that answers differ: distinct answers per batch "
          f"{', '.join(str(x['distinct_answers']) for x in dc['rows'])}), median of {dc['reps']} alternating "
          f"repetitions; cached and re-encoded answers identical in every row (checked, else the benchmark fails). "
          f"Goal: >= {dc['goal']['speedup']:g}x at {dc['goal']['digits']} digits: {yes(dc['met'])}.", "",
          "| answer digits | level | prompt tokens | KV cache ms/batch | re-encoding ms/batch | speed-up | identical |",
          "|---|---|---|---|---|---|---|"]
    t3 += [f"| {x['answer_length']} | {x['level']} | {x['prompt_length']} | {x['cached_ms_median']:.1f} | "
           f"{x['naive_ms_median']:.1f} | {x['speedup']:.1f}x | {'yes' if x['identical'] else 'NO'} |"
           for x in dc["rows"]]
    return "\n\n".join([head, "\n".join(t1), "\n".join(t2), "\n".join(t3)])


INTRO = """What the tinylm trainer and decoder cost on this machine, each against a reference measured in the same run:
the trainer against a minimal hand-written PyTorch loop of the same model on the same batches, its model FLOP/s
against a measured fp32 matmul peak, KV-cached decoding against re-encoding the whole prefix. Made by
`benchmarks/speed.py` (its docstring says what each loop does); raw results in `benchmarks/results/speed.json`.

"""


def write_benchmarks_md(text: str, path: Path) -> None:
    write_section(path, "speed", "Scale and speed: trainer throughput, FLOP/s, decoding", text, INTRO)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes; writes neither BENCHMARKS.md nor results/")
    ap.add_argument("--report", action="store_true", help="write results/speed.json and the BENCHMARKS.md section")
    ap.add_argument("--json", type=Path, help="also write the raw results to this path")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    for k, v in FULL.items():
        ap.add_argument(f"--{k.replace('_', '-')}", type=int, default=None, help=f"default {v} ({QUICK[k]} quick)")
    a = ap.parse_args()
    s = {k: getattr(a, k) if getattr(a, k) is not None else (QUICK if a.quick else FULL)[k] for k in FULL}
    torch.set_num_threads(a.threads)
    task, t0 = get_task("addition"), time.perf_counter()
    res = {"machine": machine(torch.get_num_threads()), "quick": a.quick, "settings": s,
           "command": " ".join([".venv/bin/python", "benchmarks/speed.py", *sys.argv[1:]])}
    print(f"trainer throughput ({s['reps']} x {s['steps']} steps each loop)", flush=True)
    res["throughput"] = throughput(task, s)
    print("matmul peak", flush=True)
    res["flops"] = model_flops(res["throughput"], matmul_peak(s["matmul_n"], s["matmul_reps"]))
    print("decoding", flush=True)
    res["decoding"] = decoding(task, s)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    res["machine"]["load_end"] = [round(x, 2) for x in os.getloadavg()]
    text = tables(res)
    print(text)
    print(f"\n({res['wall_s']} s)")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    if a.report:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "speed.json").write_text(json.dumps(res, indent=1))
        write_benchmarks_md(text, REPO / "BENCHMARKS.md")


if __name__ == "__main__":
    main()
