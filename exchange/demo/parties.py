"""Firms that export and import rough diamonds in the demo, by country (name, city)."""

from __future__ import annotations

FIRMS: dict[str, tuple[tuple[str, str], ...]] = {
    "BW": (("Okavango Diamond Company", "Gaborone"), ("Debswana Diamond Company", "Gaborone")),
    "ZA": (("Alexkor SOC", "Alexander Bay"), ("Kimberley Rough Traders", "Kimberley")),
    "NA": (("Namib Desert Diamonds", "Windhoek"), ("Namdeb Diamond Corporation", "Oranjemund")),
    "LS": (("Letseng Diamonds", "Maseru"), ("Liqhobong Mining Development", "Maseru")),
    "AO": (("Sodiam", "Luanda"), ("Catoca Mining Society", "Saurimo")),
    "CD": (("Societe Miniere de Bakwanga", "Mbuji-Mayi"), ("Kasai Artisanal Comptoir", "Tshikapa")),
    "ZW": (("Minerals Marketing Corporation of Zimbabwe", "Harare"),),
    "EU": (("Antwerp Rough Trading NV", "Antwerp"), ("Edelsteine Idar GmbH", "Idar-Oberstein")),
    "AE": (("Dubai Rough DMCC", "Dubai"), ("Almas Tower Trading LLC", "Dubai")),
    "IN": (("Surat Rough Imports Pvt Ltd", "Surat"), ("Bharat Diamond Bourse Traders", "Mumbai")),
    "CH": (("Geneve Rough SA", "Geneva"),),
    "US": (("New York Rough LLC", "New York"),),
    "IL": (("Ramat Gan Rough Ltd", "Ramat Gan"),),
}
