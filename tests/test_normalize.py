"""Spoken forms per language: numbers, decimals, times, dates, ordinals, %, currencies, units."""

from __future__ import annotations

import re

import pytest

from wyoming_wsrvc.text.normalize import normalize


@pytest.mark.parametrize(
    ("lang", "text", "expected"),
    [
        ("en", "It is 10:45.", "It is ten forty-five."),
        ("en", "Meet at 9:05 or 10:00.", "Meet at nine oh five or ten o'clock."),
        ("en", "It is 21.5°C", "It is twenty-one point five degrees Celsius"),
        ("en", "Costs $1,250.50", "Costs one thousand, two hundred and fifty dollars, fifty cents"),
        ("en", "Only 3 € and 30%", "Only three euros and thirty percent"),
        ("en", "On 2024-03-05", "On March fifth, twenty twenty-four"),
        ("en", "the 3rd time", "the third time"),
        (
            "en",
            "Dr. Smith drove 5 km, e.g. today",
            "Doctor Smith drove five kilometers, for example today",
        ),
        ("en", "1000000 people", "one million people"),
        ("de", "Es ist 10:45 Uhr", "Es ist zehn Uhr fünfundvierzig"),
        ("de", "21,5 °C, 50 %", "einundzwanzig Komma fünf Grad Celsius, fünfzig Prozent"),
        ("de", "1.000 Euro, 12,50 €", "eintausend Euro, zwölf Euro und fünfzig Cent"),
        ("de", "z.B. am 03.10.2024", "zum Beispiel am dritte Oktober zweitausendvierundzwanzig"),
        ("fr", "le 1er mai à 10:45", "le premier mai à dix heures quarante-cinq"),
        ("fr", "21,5°C", "vingt et un virgule cinq degrés Celsius"),
        ("es", "cuesta 12 €, el 2º día", "cuesta doce euros, el segundo día"),
        ("it", "Sono le 10:45", "Sono le dieci e quarantacinque"),
        ("pt", "São 5 km", "São cinco quilómetros"),
        ("nl", "Het kost 12 €", "Het kost twaalf euro"),
        (
            "pl",
            "Kosztuje 12 zł, np. 5 km",
            "Kosztuje dwanaście złotych, na przykład pięć kilometrów",
        ),
    ],
)
def test_spoken_forms(lang: str, text: str, expected: str) -> None:
    assert normalize(text, lang) == expected


@pytest.mark.parametrize("lang", ["en", "pl", "de", "fr", "es", "it", "pt", "nl"])
def test_no_digits_survive(lang: str) -> None:
    text = "Call 555 1234 at 7:30, 12.5% of 2,000 on 01/02/2024 costs 3 € for 4 kg at 21 °C."
    assert not re.search(r"\d", normalize(text, lang))


def test_unknown_language_is_left_alone() -> None:
    assert normalize("number 5", "xx") == "number 5"
    assert normalize("これは 12 です", "ja") == "これは 十二 です"
