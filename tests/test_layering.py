"""Package layering: production code (the RTL, the compiler, the driver and its backends, the
ISA and parameter modules, the FPGA flow) does not import the test oracle.

``verification/reference.py`` (the numpy integer algorithms the kernels are checked against)
and the testbenches may import production code, never the other way round. The one exception
is the demo (``host/demo.py``), which checks its results against the reference; the model
backend (``host/backends/model.py``) runs the cycle-exact model of ``verification/model``.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = ("rtl", "firmware", "host", "openlpu", "synth")
ALLOWED = {
    "host/demo.py": ("openlpu.verification",),
    "host/backends/model.py": ("openlpu.verification.model",),
}


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            for a in node.names:
                yield f"{node.module}.{a.name}"


def _production_files():
    for top in PRODUCTION:
        for f in sorted((ROOT / top).rglob("*.py")):
            yield f.relative_to(ROOT).as_posix()


def _violations(rel, path):
    allowed = ALLOWED.get(rel, ())
    return sorted({m for m in _imports(path)
                   if (m == "openlpu.verification" or m.startswith("openlpu.verification."))
                   and not any(m == a or m.startswith(a + ".") for a in allowed)})


def test_production_code_does_not_import_verification():
    files = list(_production_files())
    assert len(files) > 30 and "firmware/compiler.py" in files
    bad = {rel: v for rel in files if (v := _violations(rel, ROOT / rel))}
    assert not bad, f"production modules import the verification package: {bad}"


def test_the_check_sees_an_oracle_import(tmp_path):
    """The scan finds both import forms (so the test above can fail)."""
    f = tmp_path / "x.py"
    f.write_text("from openlpu.verification.reference import softmax_int\n"
                 "import openlpu.verification.model\n")
    assert _violations("firmware/x.py", f) == ["openlpu.verification.model",
                                               "openlpu.verification.reference",
                                               "openlpu.verification.reference.softmax_int"]
    assert _violations("host/backends/model.py", f) == ["openlpu.verification.reference",
                                                        "openlpu.verification.reference.softmax_int"]
