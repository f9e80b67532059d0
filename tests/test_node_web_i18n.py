"""Every message the node's pages and the web foundation show has a French and a Portuguese
translation, and the catalogues load from the committed .po files (no build step)."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from exchange.web.i18n import load_catalogues
from nodes.web.app import NAV
from nodes.web.reasons import EXPLANATIONS

ROOT = Path(__file__).resolve().parents[1]
# Messages passed through a variable (labels of macros, states, roles) are listed by the code
# that passes them; these are checked as well.
VARIABLE_MESSAGES = {label for _, label in NAV} | set(EXPLANATIONS.values()) | {
    "accepted", "rejected", "pending", "issued", "voided", "replaced", "draft", "authorised",
    "discarded", "unmixed", "mixed", "clerk", "officer", "auditor", "Exporter", "Importer",
}  # fmt: skip


def extracted(package: str) -> set[str]:
    found = extract_from_dir(
        ROOT / package,
        method_map=[("templates/**.html", "jinja2.ext:babel_extract"), ("**.py", "python")],
        keywords={"_": None, "gettext": None},
    )
    return {m if isinstance(m, str) else m[0] for _, _, m, _, _ in found}


@pytest.mark.parametrize("lang", ["fr", "pt"])
def test_every_message_of_the_pages_is_translated(lang: str) -> None:
    translated: set[str] = set()
    for package in ("exchange/web", "nodes/web"):
        po = ROOT / package / "locale" / lang / "LC_MESSAGES" / "messages.po"
        translated |= {m.id for m in read_po(po.open("rb")) if m.id and m.string}
    wanted = extracted("nodes/web") | extracted("exchange/web") | VARIABLE_MESSAGES
    assert sorted(wanted - translated) == []


def test_the_catalogues_load_from_the_committed_po_files() -> None:
    catalogues = load_catalogues(["nodes.web"])
    assert catalogues["fr"].gettext("Certificates") == "Certificats"
    assert catalogues["pt"].gettext("Sign in") == "Entrar"
    assert catalogues["en"].gettext("Certificates") == "Certificates"
