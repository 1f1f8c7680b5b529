"""ONNX import (firmware/graph/onnx_import.py) and the ONNX backend (host/backends/onnx_backend.py):
onnx's own node test cases for the integer matmuls, QDQ graphs built here compared against
onnxruntime, and the errors naming the node. Runs on the reference model (presets "default",
"mini" and "base" tried in that order)."""

import functools
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from openlpu.firmware.graph import GraphCompileError, compile_graph  # noqa: E402
from openlpu.firmware.graph.onnx_import import (OnnxImportError, import_onnx,  # noqa: E402
                                                import_onnx_model)
from openlpu.host.backends.onnx_backend import OnnxBackend  # noqa: E402
from openlpu.host.device import Device  # noqa: E402
from openlpu.params import preset  # noqa: E402
from openlpu.verification.graph_ref import run_graph  # noqa: E402


@functools.lru_cache(maxsize=None)
def _all_cases():
    # collect_testcases registers cases once per process: collect them all once
    import onnx.backend.test.case.node as N
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {tc.name: tc for tc in N.collect_testcases(None)}


def _cases(op):
    return {k: v for k, v in _all_cases().items() if v.model.graph.node[0].op_type == op}


# onnx node test cases the symmetric 2-D int8 IR cannot express, and why
EXCLUDED = {
    "test_qlinearmatmul_2D_uint8_float32": "y_zero_point is 118",
    "test_qlinearmatmul_2D_uint8_float16": "y_zero_point is 118",
    "test_qlinearmatmul_3D_uint8_float32": "y_zero_point is 118",
    "test_qlinearmatmul_3D_uint8_float16": "y_zero_point is 118",
    "test_qlinearmatmul_2D_int8_float32": "y_zero_point is -9",
    "test_qlinearmatmul_2D_int8_float16": "y_zero_point is -9",
    "test_qlinearmatmul_3D_int8_float32": "y_zero_point is -9",
    "test_qlinearmatmul_3D_int8_float16": "y_zero_point is -9",
}


def test_onnx_matmulinteger_node_case_runs_bit_exact():
    tc = _cases("MatMulInteger")["test_matmulinteger"]
    ins, outs = tc.data_sets[0]
    rep = OnnxBackend.prepare(tc.model)
    got = rep.run(ins)
    assert got[0].dtype == outs[0].dtype and got[0].shape == outs[0].shape
    np.testing.assert_array_equal(got[0], outs[0])
    measured, predicted = rep.last_cycles
    assert measured == predicted


@pytest.mark.parametrize("name", sorted(EXCLUDED))
def test_onnx_qlinearmatmul_node_cases_excluded_with_a_clear_error(name):
    tc = _cases("QLinearMatMul")[name]
    ins, _ = tc.data_sets[0]
    with pytest.raises(OnnxImportError, match=f"QLinearMatMul.*{EXCLUDED[name]}"):
        OnnxBackend.prepare(tc.model).run(ins)


def test_backend_supports_cpu():
    assert OnnxBackend.supports_device("CPU")
    assert not OnnxBackend.supports_device("CUDA")


# -- graphs built here ---------------------------------------------------------------------------
def _edge(rng, shape):
    """Seeded int8 values with the edge values -128, 127, 0, 1 in the first places."""
    a = rng.integers(-128, 128, shape).astype(np.int8)
    a.reshape(-1)[:4] = [-128, 127, 0, 1]
    return a


def _model(nodes, inputs, outputs, inits):
    g = helper.make_graph(nodes, "t", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    onnx.checker.check_model(m)
    return m


def _ort(model, feeds):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def _f(name, v):
    return numpy_helper.from_array(np.asarray(v, dtype=np.float32), name)


def _i8(name, v):
    return numpy_helper.from_array(np.asarray(v, dtype=np.int8), name)


def qlinearmatmul_model(rng, M, K, N, a_s=0.02, b_s=0.01, y_s=None):
    B = _edge(rng, (K, N))
    y_s = y_s or a_s * b_s * 40.0
    node = helper.make_node("QLinearMatMul", ["a", "a_s", "a_zp", "B", "b_s", "b_zp", "y_s",
                                              "y_zp"], ["y"], name="qmm")
    inits = [_f("a_s", a_s), _i8("a_zp", 0), _i8("B", B), _f("b_s", b_s), _i8("b_zp", 0),
             _f("y_s", y_s), _i8("y_zp", 0)]
    return _model([node], [helper.make_tensor_value_info("a", TensorProto.INT8, [M, K])],
                  [helper.make_tensor_value_info("y", TensorProto.INT8, [M, N])], inits), B


def _exact_round(A, B, f):
    """saturate(round_half_even(A @ B * f)) in exact rational arithmetic, and where the
    product is a tie."""
    from fractions import Fraction
    acc = A.astype(np.int64) @ B.astype(np.int64)
    F = Fraction(float(f))
    v = np.vectorize(lambda a: Fraction(int(a)) * F)(acc)
    ties = np.vectorize(lambda x: (x - (x.numerator // x.denominator)) == Fraction(1, 2))(v)
    r = np.vectorize(lambda x: round(x))(v).astype(np.int64)       # Python: half to even
    return np.clip(r, -128, 127), ties


def test_qlinearmatmul_against_onnxruntime():
    rng = np.random.default_rng(7)
    M, K, N = 8, 32, 16
    model, B = qlinearmatmul_model(rng, M, K, N)
    A = _edge(rng, (M, K))
    want = _ort(model, {"a": A})[0]
    rep = OnnxBackend.prepare(model)
    got = rep.run([A])[0]
    print("preset", rep.last_package.params.name, "cycles", rep.last_cycles,
          "mismatches vs ORT", int(np.sum(got != want)), "of", got.size)
    assert got.dtype == np.int8 and got.shape == (M, N)
    assert rep.last_cycles[0] == rep.last_cycles[1]
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1
    # against the exact product (factor as ORT's float32 a_s * b_s / y_s): equal except on
    # ties, which VREQ rounds half up and ONNX half to even
    f = np.float32(0.02) * np.float32(0.01) / np.float32(0.02 * 0.01 * 40.0)
    exact, ties = _exact_round(A, B, f)
    np.testing.assert_array_equal(got[~ties], exact[~ties])
    assert np.all(np.abs(got[ties].astype(int) - exact[ties]) <= 1)


def mlp_model(rng, M, K, H, N, s_x=0.05, s_w1=0.01, s_h=0.4, s_w2=0.02, s_y=0.6,
              float_out=False):
    W1, W2 = _edge(rng, (K, H)), _edge(rng, (H, N))
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s_x", "zp"], ["xq"], name="qx"),
        helper.make_node("DequantizeLinear", ["xq", "s_x", "zp"], ["xd"], name="dqx"),
        helper.make_node("DequantizeLinear", ["W1", "s_w1", "zp"], ["w1d"], name="dqw1"),
        helper.make_node("MatMul", ["xd", "w1d"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["hr"], name="relu1"),
        helper.make_node("QuantizeLinear", ["hr", "s_h", "zp"], ["hq"], name="qh"),
        helper.make_node("DequantizeLinear", ["hq", "s_h", "zp"], ["hd"], name="dqh"),
        helper.make_node("DequantizeLinear", ["W2", "s_w2", "zp"], ["w2d"], name="dqw2"),
        helper.make_node("MatMul", ["hd", "w2d"], ["y"], name="fc2"),
        helper.make_node("QuantizeLinear", ["y", "s_y", "zp"], ["yq"], name="qy"),
    ]
    out = "yq"
    if float_out:
        nodes.append(helper.make_node("DequantizeLinear", ["yq", "s_y", "zp"], ["yf"],
                                      name="dqy"))
        out = "yf"
    inits = [_f("s_x", s_x), _f("s_w1", s_w1), _f("s_h", s_h), _f("s_w2", s_w2),
             _f("s_y", s_y), _i8("zp", 0), _i8("W1", W1), _i8("W2", W2)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [M, K])],
                  [helper.make_tensor_value_info(
                      out, TensorProto.FLOAT if float_out else TensorProto.INT8, [M, N])],
                  inits)


@pytest.mark.parametrize("float_out", [False, True])
def test_qdq_mlp_against_onnxruntime(float_out):
    rng = np.random.default_rng(3)
    M, K, H, N = 8, 32, 32, 16
    model = mlp_model(rng, M, K, H, N, float_out=float_out)
    X = (rng.standard_normal((M, K)) * 3).astype(np.float32)
    X[0, :3] = [0.0, 0.025, -0.075]                      # ties of the input quantization
    want = _ort(model, {"x": X})[0]
    rep = OnnxBackend.prepare(model)
    got = rep.run({"x": X})[0]
    print("preset", rep.last_package.params.name, "cycles", rep.last_cycles,
          "mismatches", int(np.sum(got != want)), "of", got.size)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert rep.last_cycles[0] == rep.last_cycles[1]
    # one LSB at most (rounding ties of the two requantizes, float32 sums in ORT); the
    # input quantization is done by the host as ONNX does, bit-exact
    lsb = 0.6 if float_out else 1
    assert np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))) <= lsb * 1.0001
    frac = np.mean(got != want)
    assert frac <= 0.05, frac


def test_qdq_relu_and_residual_add_against_onnxruntime():
    rng = np.random.default_rng(5)
    M, K, N = 8, 32, 16
    W = _edge(rng, (K, N))
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "s", "zp"], ["xd"], name="dqx"),
        helper.make_node("DequantizeLinear", ["W", "s_w", "zp"], ["wd"], name="dqw"),
        helper.make_node("MatMul", ["xd", "wd"], ["z"], name="fc"),
        helper.make_node("QuantizeLinear", ["z", "s", "zp"], ["zq"], name="qz"),
        helper.make_node("DequantizeLinear", ["zq", "s", "zp"], ["zd"], name="dqz"),
        helper.make_node("Relu", ["zd"], ["zr"], name="relu"),
        helper.make_node("Add", ["zr", "zd"], ["r"], name="residual"),
        helper.make_node("QuantizeLinear", ["r", "s", "zp"], ["rq"], name="qr"),
    ]
    inits = [_f("s", 0.05), _f("s_w", 0.002), _i8("zp", 0), _i8("W", W)]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.INT8, [M, K])],
                   [helper.make_tensor_value_info("rq", TensorProto.INT8, [M, N])], inits)
    X = _edge(rng, (M, K))
    imp = import_onnx_model(model)
    assert [n.op for n in imp.graph.nodes] == ["matmul", "requantize", "relu", "add"]
    ref = imp.convert_outputs(run_graph(imp.graph, imp.convert_inputs({"x": X})))["rq"]
    want = _ort(model, {"x": X})[0]
    # VXM ADD wraps where QuantizeLinear saturates: compare where the sum is in range
    ok = np.abs(want.astype(int)) < 127
    assert np.max(np.abs(ref[ok].astype(int) - want[ok])) <= 2
    got = OnnxBackend.prepare(model).run([X])[0]
    np.testing.assert_array_equal(got, ref)


def test_gemm_with_bias_compiles_on_base_and_matches_the_reference():
    rng = np.random.default_rng(9)
    M, K, N = 8, 32, 16
    W = _edge(rng, (N, K))
    bias = rng.integers(-1000, 1000, N).astype(np.int32)
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "s", "zp"], ["xd"], name="dqx"),
        helper.make_node("DequantizeLinear", ["W", "s_w", "zp"], ["wd"], name="dqw"),
        helper.make_node("DequantizeLinear", ["b", "s_b"], ["bd"], name="dqb"),
        helper.make_node("Gemm", ["xd", "wd", "bd"], ["z"], name="gemm", transB=1),
        helper.make_node("QuantizeLinear", ["z", "s_y", "zp"], ["zq"], name="qz"),
    ]
    inits = [_f("s", 0.05), _f("s_w", 0.01), _f("s_b", np.float32(0.05) * np.float32(0.01)),
             _f("s_y", 0.3), _i8("zp", 0), _i8("W", W),
             numpy_helper.from_array(bias, "b")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.INT8, [M, K])],
                   [helper.make_tensor_value_info("zq", TensorProto.INT8, [M, N])], inits)
    X = _edge(rng, (M, K))
    imp = import_onnx_model(model)
    np.testing.assert_array_equal(imp.graph.values["gemm.bias"].data, bias)
    ref = imp.convert_outputs(run_graph(imp.graph, imp.convert_inputs({"x": X})))["zq"]
    want = _ort(model, {"x": X})[0]
    assert np.max(np.abs(ref.astype(int) - want)) <= 1
    # the bias epilogue (emit_linear) needs four MEM slices per side: base
    with pytest.raises(GraphCompileError, match="gemm"):
        compile_graph(imp.graph, preset("mini"))
    p = preset("base")
    pkg = compile_graph(imp.graph, p)
    with Device.open("model", p) as dev:
        cycles, out = dev.run_package(pkg, imp.convert_inputs({"x": X}))
    assert cycles == pkg.predicted_cycles
    np.testing.assert_array_equal(imp.convert_outputs(out)["zq"], ref)


def test_qdq_softmax_imports_and_agrees_with_onnxruntime():
    M, N = 8, 16
    nodes = [helper.make_node("DequantizeLinear", ["x", "s", "zp"], ["xd"], name="dqx"),
             helper.make_node("Softmax", ["xd"], ["p"], name="softmax", axis=-1),
             helper.make_node("QuantizeLinear", ["p", "s_p", "zp"], ["pq"], name="qp")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.INT8, [M, N])],
                   [helper.make_tensor_value_info("pq", TensorProto.INT8, [M, N])],
                   [_f("s", 0.0625), _f("s_p", 1 / 127), _i8("zp", 0)])
    X = _edge(np.random.default_rng(11), (M, N))
    imp = import_onnx_model(model)
    assert [n.op for n in imp.graph.nodes] == ["softmax"]
    ref = imp.convert_outputs(run_graph(imp.graph, imp.convert_inputs({"x": X})))["pq"]
    want = _ort(model, {"x": X})[0]
    print("softmax max |ref - ORT|", int(np.max(np.abs(ref.astype(int) - want))))
    assert np.max(np.abs(ref.astype(int) - want)) <= SOFTMAX_LSB


#: the chip's fixed-point softmax against float softmax quantized to 1/127 (docs/compiler.md)
SOFTMAX_LSB = 1


def test_import_from_file_is_deterministic(tmp_path):
    model = mlp_model(np.random.default_rng(3), 8, 32, 32, 16)
    path = tmp_path / "mlp.onnx"
    onnx.save(model, path)
    a, b = import_onnx(model), import_onnx(path)
    assert a.dump() == b.dump()
    assert [n.op for n in a.nodes] == ["matmul", "requantize", "relu", "matmul", "requantize"]
    assert a.outputs == ["yq"]
    p = preset("mini")
    assert compile_graph(a, p).to_bytes() == compile_graph(b, p).to_bytes()


# -- errors --------------------------------------------------------------------------------------
def test_unsupported_operator_names_the_node():
    nodes = [helper.make_node("DequantizeLinear", ["x", "s", "zp"], ["xd"], name="dqx"),
             helper.make_node("Sigmoid", ["xd"], ["y"], name="gate")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.INT8, [4, 8])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
                   [_f("s", 0.1), _i8("zp", 0)])
    with pytest.raises(OnnxImportError, match=r"node 'gate' \(Sigmoid\): operator not "
                                              r"supported"):
        import_onnx(model)


def test_three_d_input_names_the_node_and_shape():
    node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"], name="mmi")
    model = _model([node], [helper.make_tensor_value_info("A", TensorProto.INT8, [2, 4, 8])],
                   [helper.make_tensor_value_info("Y", TensorProto.INT32, [2, 4, 3])],
                   [_i8("B", np.ones((8, 3)))])
    with pytest.raises(OnnxImportError, match=r"node 'mmi' \(MatMulInteger\): input 'A' has "
                                              r"shape \(2, 4, 8\); only static 2-D"):
        import_onnx(model)


def test_weight_outside_int8_after_zero_point_is_named():
    node = helper.make_node("MatMulInteger", ["A", "B", "", "bz"], ["Y"], name="mmi")
    model = _model([node], [helper.make_tensor_value_info("A", TensorProto.INT8, [4, 8])],
                   [helper.make_tensor_value_info("Y", TensorProto.INT32, [4, 3])],
                   [_i8("B", np.full((8, 3), 127)), _i8("bz", -5)])
    with pytest.raises(OnnxImportError, match=r"'mmi' \(MatMulInteger\): B 'B' minus its zero "
                                              r"point -5 spans \[132, 132\], outside int8"):
        import_onnx(model)


def test_qlinearmatmul_scale_mismatch_is_named():
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s_x", "zp"], ["xq"], name="qx"),
             helper.make_node("QLinearMatMul", ["xq", "s_a", "zp", "B", "s_b", "zp", "s_y",
                                                "zp"], ["y"], name="qmm")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
                   [helper.make_tensor_value_info("y", TensorProto.INT8, [4, 3])],
                   [_f("s_x", 0.1), _f("s_a", 0.2), _f("s_b", 0.01), _f("s_y", 0.5),
                    _i8("zp", 0), _i8("B", _edge(rng, (8, 3)))])
    with pytest.raises(OnnxImportError, match=r"'qmm' \(QLinearMatMul\): a_scale 0.2\d* "
                                              r"differs"):
        import_onnx(model)


def test_input_outside_int8_after_zero_point_is_named():
    tc = _cases("MatMulInteger")["test_matmulinteger"]
    ins, _ = tc.data_sets[0]
    ins = [a.copy() for a in ins]
    ins[0][0, 0] = 200
    with pytest.raises(OnnxImportError, match=r"input 'A': values minus the zero point 12 "
                                              r"span \[-12, 188\]"):
        OnnxBackend.prepare(tc.model).run(ins)


@pytest.mark.parametrize("backend", ["verilator"])
def test_qdq_mlp_on_the_rtl(backend):
    """The QDQ MLP (two linears and a relu) as an ONNX file, compiled for preset "mini" (the
    smallest with VXM ALUs for the requantizes) and run on the Verilator RTL: the integer
    reference's outputs, measured == predicted cycles."""
    import tempfile
    from pathlib import Path

    from openlpu.host.device import Device
    rng = np.random.default_rng(3)
    model = mlp_model(rng, 8, 32, 32, 16)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "mlp.onnx"
        onnx.save(model, path)
        imp = import_onnx_model(path)
    params = preset("mini")
    pkg = compile_graph(imp.graph, params)
    X = (rng.standard_normal((8, 32)) * 3).astype(np.float32)
    feeds = imp.convert_inputs({"x": X})
    with Device.open(backend, params) as dev:
        cycles, outs = dev.run_package(pkg, feeds)
    print("verilator mini: cycles", cycles, "predicted", pkg.predicted_cycles)
    assert cycles == pkg.predicted_cycles
    want = run_graph(imp.graph, feeds)
    np.testing.assert_array_equal(outs["yq"], want["yq"])
    got = imp.convert_outputs(outs)["yq"]
    assert np.max(np.abs(got.astype(int) - _ort(model, {"x": X})[0])) <= 1
