"""Documentation generated from the ISA table is current and complete."""

from openlpu import isa, isadoc


def test_isa_reference_is_current():
    text = isadoc.DOC.read_text()
    assert isadoc.render(text) == text, "run: python -m openlpu.isadoc --write"


def test_every_instruction_has_a_section():
    text = isadoc.DOC.read_text()
    for idef in isa.INSTRUCTIONS:
        assert f"### `{idef.mnemonic}`" in text
