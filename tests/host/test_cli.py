"""The ``openlpu`` command line (host/cli.py) and the static issue times it draws
(:func:`openlpu.isa.queue_issues`)."""

import json

import numpy as np
import pytest

from openlpu import isa
from openlpu.firmware.asm import assemble
from openlpu.firmware.compiler import compile_matmul
from openlpu.firmware.package import Package
from openlpu.firmware.schedule import Schedule, issue_counts
from openlpu.host import cli
from openlpu.params import preset

SPEC = """
from openlpu.firmware.compiler import compile_matmul
def program(params):
    return compile_matmul(params, 5, 19, 7, requantize=((1 << 30) + 99, 3))
"""


def test_queue_issues_reproduce_the_placed_cycles():
    """Random placements (runs that become REPEATs, gaps longer than one NOP) -> words ->
    queue_issues gives back every placed instruction at its cycle."""
    p = preset("mini")
    rng = np.random.default_rng(7)
    for trial in range(20):
        s = Schedule(p)
        placed = {}
        for q in ("mem_w0.read", "mxm_w.compute", "vxm.alu1"):
            t = int(rng.integers(0, 5))
            want = []
            for _ in range(int(rng.integers(1, 30))):
                if q == "mem_w0.read":
                    s.place(q, t, "READ", addr=len(want) % p.mem_words, stream=0, dir=0)
                    want.append((t, "READ"))
                elif q == "mxm_w.compute":
                    s.place(q, t, "ABC", acc=0, stream=0, dir=0, accumulate=1)
                    want.append((t, "ABC"))
                else:
                    s.place(q, t, "VADD", a_stream=0, a_dir=0, a_chain=0, b_stream=1, b_dir=0,
                            b_mode=0, out_dir=0, dtype=0, imm=0)
                    want.append((t, "VADD"))
                t += int(rng.choice([1, 1, 1, 2, 3, isa.NOP_MAX + 5]))
            placed[q] = want
        words, _ = s.emit()
        for q, want in placed.items():
            got = [(t, idef.mnemonic) for _, idef, _, t in isa.queue_issues(words[q])]
            assert got == want, (trial, q)


def test_queue_issues_stop_at_sync_and_halt():
    p = preset("quad")
    q = p.queues[0].name
    words = assemble(f".queue {q}\n  NOP 3\n  NOTIFY\n  SYNC\n  NOP 2\n  NOTIFY\n  HALT\n"
                     f"  NOTIFY\n", p)[q]
    got = [(idef.mnemonic, t) for _, idef, _, t in isa.queue_issues(words)]
    assert got == [("NOTIFY", 3), ("SYNC", None), ("NOTIFY", 2)]      # nothing after HALT
    timeline, synced = cli.queue_timeline(words)
    assert timeline == [(3, "NOTIFY")] and synced


def test_queue_issues_names_a_bad_word():
    with pytest.raises(isa.IsaError) as e:
        list(isa.queue_issues([isa.BY_MNEMONIC["NOP"].encode(count=1), 0x3F]))
    assert e.value.index == 1


def _main(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_compile_run_inspect_disasm_timeline(tmp_path, capsys):
    spec = tmp_path / "spec.py"
    spec.write_text(SPEC)
    prog = tmp_path / "prog.lpu"
    code, out, _ = _main(capsys, "compile", spec, "-o", prog, "--preset", "mini")
    assert code == 0 and "cycles predicted" in out
    pkg = Package.load(prog)
    ref = compile_matmul(preset("mini"), 5, 19, 7, requantize=((1 << 30) + 99, 3))
    assert pkg.to_bytes() == ref.to_bytes()

    rng = np.random.default_rng(3)
    A, B = rng.integers(-128, 128, (5, 19)), rng.integers(-128, 128, (19, 7))
    A[0, :4] = [-128, 127, 0, 1]
    np.savez(tmp_path / "in.npz", A=A, B=B)
    code, out, _ = _main(capsys, "run", prog, "--backend", "model", "--inputs",
                         tmp_path / "in.npz", "--outputs", tmp_path / "out.npz")
    assert code == 0
    assert f"{pkg.predicted_cycles} cycles, predicted {pkg.predicted_cycles} (equal)" in out
    abc = sum(issue_counts(w).get("ABC", 0) for w in pkg.queues.values())
    assert f"MXM utilization {100 * abc / pkg.predicted_cycles:.1f} %" in out
    from openlpu import vxm_ops
    got = np.load(tmp_path / "out.npz")["C"]
    np.testing.assert_array_equal(got, vxm_ops.requantize(A @ B, (1 << 30) + 99, 3))

    code, out, _ = _main(capsys, "inspect", prog, "--json")
    fig = json.loads(out)
    assert fig["predicted_cycles"] == pkg.predicted_cycles and fig["abc_issues"] == abc
    for q, words in pkg.queues.items():
        assert fig["queues"][q]["words"] == len(words)
        assert fig["queues"][q]["counts"] == {m: n for m, n in issue_counts(words).items()
                                             if m not in ("NOP", "HALT", "REPEAT")}
    assert sum(fig["tensor_words"].values()) == sum(
        t.words(pkg.params.vl) * len(t.planes) for t in pkg.inputs + pkg.outputs)
    code, out, _ = _main(capsys, "inspect", prog)
    assert code == 0 and "A" in out and "mxm_w.compute" in out

    code, out, _ = _main(capsys, "disasm", prog)
    assert code == 0
    assert assemble(out, pkg.params) == {q: list(w) for q, w in pkg.queues.items()}

    png = tmp_path / "t.png"
    code, out, _ = _main(capsys, "timeline", prog, "-o", png, "--start", 2, "--cycles", 40)
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "cycles 2..41" in out


def test_user_errors_exit_2_with_a_message(tmp_path, capsys):
    code, _, err = _main(capsys, "inspect", tmp_path / "nope.lpu")
    assert code == 2 and "no such program file" in err
    bad = tmp_path / "bad.lpu"
    bad.write_bytes(b"not a package")
    code, _, err = _main(capsys, "disasm", bad)
    assert code == 2 and "not a valid program" in err
    prog = tmp_path / "p.lpu"
    compile_matmul(preset("tiny"), 2, 3, 2).save(prog)
    code, _, err = _main(capsys, "run", prog)
    assert code == 2 and "needs inputs A, B (give --inputs in.npz)" in err
    np.savez(tmp_path / "a.npz", A=np.zeros((2, 3), dtype=np.int8))
    code, _, err = _main(capsys, "run", prog, "--inputs", tmp_path / "a.npz")
    assert code == 2 and "needs inputs B not in" in err
    np.savez(tmp_path / "ab.npz", A=np.zeros((2, 3), dtype=np.int8), B=np.zeros((4, 2), dtype=np.int8))
    code, _, err = _main(capsys, "run", prog, "--inputs", tmp_path / "ab.npz")
    assert code == 2 and "B" in err                       # wrong shape, named by the driver
    code, _, err = _main(capsys, "disasm", prog, "--queue", "nope")
    assert code == 2 and "no queue 'nope'" in err
    spec = tmp_path / "s.py"
    spec.write_text("x = 1\n")
    code, _, err = _main(capsys, "compile", spec, "-o", tmp_path / "o.lpu")
    assert code == 2 and "defines no function program(params)" in err
    code, _, err = _main(capsys, "timeline", prog, "-o", tmp_path / "t.png", "--start", 10 ** 6)
    assert code == 2 and "nothing issues" in err


def test_compile_onnx_model(tmp_path, capsys):
    pytest.importorskip("onnx")
    import onnx
    from openlpu.firmware.graph.onnx_import import import_onnx_model
    from openlpu.host.device import Device
    from openlpu.verification.graph_ref import run_graph
    from tests.firmware.test_onnx_import import mlp_model
    model = mlp_model(np.random.default_rng(3), 8, 32, 32, 16)
    path = tmp_path / "mlp.onnx"
    onnx.save(model, path)
    prog = tmp_path / "mlp.lpu"
    code, out, _ = _main(capsys, "compile", path, "-o", prog, "--preset", "mini")
    assert code == 0 and "for preset 'mini'" in out
    pkg = Package.load(prog)
    imp = import_onnx_model(model)
    X = np.random.default_rng(4).integers(-128, 128, (8, 32))
    with Device.open("model", preset("mini")) as dev:
        cycles, outs = dev.run_package(pkg, {"x": X})
    assert cycles == pkg.predicted_cycles
    want = run_graph(imp.graph, {"x": X})
    np.testing.assert_array_equal(outs["yq"], want["yq"])     # the ONNX output name
    # a model the import cannot read: exit 2 naming the node
    bad = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Sigmoid", ["x"], ["y"], name="gate")], "bad",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 8])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, 8])]))
    onnx.save(bad, tmp_path / "bad.onnx")
    code, _, err = _main(capsys, "compile", tmp_path / "bad.onnx", "-o", tmp_path / "b.lpu")
    assert code == 2 and "node 'gate' (Sigmoid): operator not supported" in err
