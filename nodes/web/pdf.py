"""The printable certificate: an A4 PDF with every KP Annex I minimum element and a QR code.

Annex I of the KPCS lists what a certificate must show; each appears below under its own
label. The QR code's text is the registry's public verification URL (DESIGN §13), so a
border officer's phone opens the registry's answer, not this node's. Rendered with fpdf2 and
segno; DejaVu Sans (Debian's fonts-dejavu-core) covers accented names, with a Latin-1
fallback so a machine without it still prints.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import segno
from fpdf import FPDF
from fpdf.enums import XPos, YPos

from nodes.web.context import NodeWeb

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
STATEMENT = (
    "The rough diamonds in this shipment have been handled in accordance with the provisions "
    "of the Kimberley Process Certification Scheme for rough diamonds."
)
HS_NAMES = {
    "7102.10": "7102.10 unsorted",
    "7102.21": "7102.21 industrial, unworked or simply sawn, cleaved or bruted",
    "7102.31": "7102.31 non-industrial, unworked or simply sawn, cleaved or bruted",
}


class _Document(FPDF):
    def __init__(self) -> None:
        super().__init__(format="A4", unit="mm")
        self.set_auto_page_break(auto=True, margin=15)
        self.unicode = (FONT_DIR / "DejaVuSans.ttf").exists()
        if self.unicode:
            self.add_font("body", "", str(FONT_DIR / "DejaVuSans.ttf"))
            self.add_font("body", "B", str(FONT_DIR / "DejaVuSans-Bold.ttf"))
        self.family = "body" if self.unicode else "helvetica"

    def text_of(self, value: object) -> str:
        text = str(value)
        return text if self.unicode else text.encode("latin-1", "replace").decode("latin-1")

    def field(self, label: str, value: object, bold: bool = False) -> None:
        self.set_font(self.family, "B", 9)
        self.cell(55, 6, self.text_of(label))
        self.set_font(self.family, "B" if bold else "", 10)
        self.multi_cell(0, 6, self.text_of(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def heading(self, text: str, size: int = 11) -> None:
        self.ln(2)
        self.set_font(self.family, "B", size)
        self.cell(0, 7, self.text_of(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _party(p: dict[str, Any]) -> str:
    return f"{p['name']}, {p['address']}, {p['country']} (licence {p['licence_no']})"


def _origin(origin: dict[str, Any]) -> str:
    countries = ", ".join(origin.get("countries", ())) or "not stated"
    return f"{origin['type'].title()}: {countries}"


def render_certificate(cert: dict[str, Any], nw: NodeWeb) -> bytes:
    """The PDF of ``cert`` (a certificate view from the node's pages)."""
    body = cert["body"]
    doc = _Document()
    doc.set_title(f"Kimberley Process Certificate {cert['certificate_id']}")
    doc.add_page()
    _head(doc, body, cert, nw)
    _goods(doc, body)
    _validation(doc, cert, nw)
    return bytes(doc.output())


def _head(doc: _Document, body: dict[str, Any], cert: dict[str, Any], nw: NodeWeb) -> None:
    qr = segno.make(nw.verify_url(cert["certificate_id"]), error="m")
    image = io.BytesIO()
    qr.save(image, kind="png", scale=8, border=2)
    image.seek(0)
    doc.image(image, x=160, y=10, w=38)
    doc.set_font(doc.family, "B", 16)
    doc.cell(145, 9, "KIMBERLEY PROCESS CERTIFICATE", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    doc.set_font(doc.family, "", 9)
    doc.multi_cell(145, 5, doc.text_of(STATEMENT), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    doc.ln(2)
    doc.field("Certificate number", cert["certificate_id"], bold=True)
    doc.field("Issuing authority", body["issuing_authority"])
    issuer = body["issuing_participant"]
    if body.get("issuing_member"):
        issuer = f"{issuer} (member {body['issuing_member']})"
    doc.field("Issuing KP participant", issuer)
    doc.field("Country of origin", _origin(body["origin"]))
    doc.field("Date of issue", body["date_of_issue"])
    doc.field("Date of expiry", body["date_of_expiry"])
    doc.set_y(max(doc.get_y(), 52))
    doc.field("Exporter", _party(body["exporter"]))
    doc.field("Importer", _party(body["importer"]))
    doc.field("Destination", body["destination"])


def _goods(doc: _Document, body: dict[str, Any]) -> None:
    doc.heading("Goods")
    doc.field("Number of parcels", body["number_of_parcels"])
    doc.field("Carat weight (total)", f"{body['total_carats']} ct")
    doc.field("Value (total)", f"USD {body['total_value_usd']}")
    codes = sorted({p["hs_code"] for p in body["parcels"]})
    doc.field("HS codes", "; ".join(HS_NAMES.get(c, c) for c in codes))
    container = body["container"]
    seals = ", ".join(container["seal_numbers"])
    doc.field("Container and seals", f"{container['container_id']}; seals {seals}")
    doc.set_font(doc.family, "B", 9)
    widths = (20, 80, 40, 45)
    for width, title in zip(widths, ("Parcel", "HS code", "Carats", "USD"), strict=True):
        doc.cell(width, 6, title, border="B")
    doc.ln()
    doc.set_font(doc.family, "", 9)
    for parcel in body["parcels"][:60]:
        cells = (parcel["parcel_no"], parcel["hs_code"], parcel["carats"], parcel["value_usd"])
        for width, value in zip(widths, cells, strict=True):
            doc.cell(width, 5, doc.text_of(value))
        doc.ln()
    if len(body["parcels"]) > 60:
        doc.cell(
            0,
            5,
            f"… and {len(body['parcels']) - 60} more parcels",
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )


def _validation(doc: _Document, cert: dict[str, Any], nw: NodeWeb) -> None:
    doc.heading("Validation by the exporting authority")
    who = cert.get("authorised")
    if who and not who["national_system"]:
        doc.field("Authorised by", f"{who['full_name']}, {nw.authority}")
    else:  # issued through the API or kpx node submit: the authority's own system vouches
        system = f" ({who['full_name']})" if who else ""
        doc.field("Authorised by", f"{nw.authority}, through its national system{system}")
    if who:
        doc.field("Authorised on", who["at"].strftime("%Y-%m-%d %H:%M UTC"))
    state = cert.get("registry_state") or "pending"
    local = cert.get("state", "ISSUED")
    doc.field("Registry state", f"{state}; at this authority: {local.lower()}")
    doc.field("Verify", nw.verify_url(cert["certificate_id"]))
    doc.set_font(doc.family, "", 8)
    doc.multi_cell(
        0,
        4,
        doc.text_of(
            "Scan the QR code or open the address above: the regional registry shows whether this "
            "certificate is valid. Do not accept the goods if it says DO NOT ACCEPT."
        ),
    )
