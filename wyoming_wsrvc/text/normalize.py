"""Spoken forms: numbers, decimals, times, dates, ordinals, percentages, currencies, units and
common abbreviations become words in the request's language (numbers through `num2words`).

WhisperSpeech reads raw characters, so "21.5°C" must reach it as words. Covered languages: en,
pl, de, fr, es, it, pt, nl; other languages num2words knows get numbers only; anything else is
left as it is.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from num2words import num2words

from .language import base_language

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lang:
    """Words of one language that num2words does not provide."""

    decimal: str  # decimal separator in running text
    months: tuple[str, ...]
    percent: str
    time: str  # format with {h} and {m}
    time_full: str  # format with {h} for hh:00
    date: str  # format with {d} (ordinal), {m} (month), {y} (year)
    units: dict[str, str]
    abbreviations: dict[str, str] = field(default_factory=dict)
    currencies: dict[str, str] = field(default_factory=dict)
    ordinal_suffix: str = r"(?!)"  # regex of ordinal markers after digits


LANGS: dict[str, Lang] = {
    "en": Lang(
        ".",
        tuple(
            "January February March April May June July August September October "
            "November December".split()
        ),
        "percent",
        "{h} {m}",
        "{h} o'clock",
        "{m} {d}, {y}",
        {
            "°C": "degrees Celsius",
            "°F": "degrees Fahrenheit",
            "km/h": "kilometers per hour",
            "km": "kilometers",
            "kg": "kilograms",
            "cm": "centimeters",
            "mm": "millimeters",
            "kWh": "kilowatt hours",
            "mph": "miles per hour",
            "m": "meters",
            "g": "grams",
            "l": "liters",
            "W": "watts",
            "°": "degrees",
        },
        {
            "Dr.": "Doctor",
            "Mr.": "Mister",
            "Mrs.": "Missus",
            "Ms.": "Miss",
            "Prof.": "Professor",
            "e.g.": "for example",
            "i.e.": "that is",
            "etc.": "et cetera",
            "vs.": "versus",
            "approx.": "approximately",
            "St.": "Saint",
            "Jr.": "Junior",
            "&": "and",
        },
        {"$": "dollars", "€": "euros", "£": "pounds", "EUR": "euros", "USD": "dollars"},
        r"(?:st|nd|rd|th)",
    ),
    "de": Lang(
        ",",
        tuple(
            "Januar Februar März April Mai Juni Juli August September Oktober November "
            "Dezember".split()
        ),
        "Prozent",
        "{h} Uhr {m}",
        "{h} Uhr",
        "{d} {m} {y}",
        {
            "°C": "Grad Celsius",
            "°F": "Grad Fahrenheit",
            "km/h": "Kilometer pro Stunde",
            "km": "Kilometer",
            "kg": "Kilogramm",
            "cm": "Zentimeter",
            "mm": "Millimeter",
            "kWh": "Kilowattstunden",
            "m": "Meter",
            "g": "Gramm",
            "l": "Liter",
            "W": "Watt",
            "°": "Grad",
        },
        {
            "z.B.": "zum Beispiel",
            "z. B.": "zum Beispiel",
            "bzw.": "beziehungsweise",
            "ca.": "circa",
            "usw.": "und so weiter",
            "Dr.": "Doktor",
            "Nr.": "Nummer",
            "d.h.": "das heißt",
            "Str.": "Straße",
            "&": "und",
        },
        {"€": "Euro", "$": "Dollar", "£": "Pfund", "EUR": "Euro", "USD": "Dollar"},
    ),
    "fr": Lang(
        ",",
        tuple(
            "janvier février mars avril mai juin juillet août septembre octobre novembre "
            "décembre".split()
        ),
        "pour cent",
        "{h} heures {m}",
        "{h} heures",
        "{d} {m} {y}",
        {
            "°C": "degrés Celsius",
            "km/h": "kilomètres par heure",
            "km": "kilomètres",
            "kg": "kilogrammes",
            "cm": "centimètres",
            "mm": "millimètres",
            "kWh": "kilowattheures",
            "m": "mètres",
            "g": "grammes",
            "l": "litres",
            "W": "watts",
            "°": "degrés",
        },
        {"M.": "Monsieur", "Mme": "Madame", "Dr": "Docteur", "etc.": "et cetera", "&": "et"},
        {"€": "euros", "$": "dollars", "£": "livres", "EUR": "euros", "USD": "dollars"},
        r"(?:er|re|e|ème)",
    ),
    "es": Lang(
        ",",
        tuple(
            "enero febrero marzo abril mayo junio julio agosto septiembre octubre "
            "noviembre diciembre".split()
        ),
        "por ciento",
        "{h} y {m}",
        "las {h}",
        "{d} de {m} de {y}",
        {
            "°C": "grados Celsius",
            "km/h": "kilómetros por hora",
            "km": "kilómetros",
            "kg": "kilogramos",
            "cm": "centímetros",
            "mm": "milímetros",
            "kWh": "kilovatios hora",
            "m": "metros",
            "g": "gramos",
            "l": "litros",
            "W": "vatios",
            "°": "grados",
        },
        {"Sr.": "señor", "Sra.": "señora", "Dr.": "doctor", "etc.": "etcétera", "&": "y"},
        {"€": "euros", "$": "dólares", "£": "libras", "EUR": "euros", "USD": "dólares"},
        r"(?:º|ª|°)",
    ),
    "it": Lang(
        ",",
        tuple(
            "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre "
            "novembre dicembre".split()
        ),
        "per cento",
        "{h} e {m}",
        "le {h}",
        "{d} {m} {y}",
        {
            "°C": "gradi Celsius",
            "km/h": "chilometri orari",
            "km": "chilometri",
            "kg": "chilogrammi",
            "cm": "centimetri",
            "mm": "millimetri",
            "kWh": "chilowattora",
            "m": "metri",
            "g": "grammi",
            "l": "litri",
            "W": "watt",
            "°": "gradi",
        },
        {"Sig.": "signor", "Dott.": "dottor", "ecc.": "eccetera", "&": "e"},
        {"€": "euro", "$": "dollari", "£": "sterline", "EUR": "euro", "USD": "dollari"},
        r"(?:º|ª|°)",
    ),
    "pt": Lang(
        ",",
        tuple(
            "janeiro fevereiro março abril maio junho julho agosto setembro outubro "
            "novembro dezembro".split()
        ),
        "por cento",
        "{h} e {m}",
        "{h} horas",
        "{d} de {m} de {y}",
        {
            "°C": "graus Celsius",
            "km/h": "quilómetros por hora",
            "km": "quilómetros",
            "kg": "quilogramas",
            "cm": "centímetros",
            "mm": "milímetros",
            "kWh": "quilowatts-hora",
            "m": "metros",
            "g": "gramas",
            "l": "litros",
            "W": "watts",
            "°": "graus",
        },
        {"Sr.": "senhor", "Sra.": "senhora", "Dr.": "doutor", "etc.": "et cetera", "&": "e"},
        {"€": "euros", "$": "dólares", "£": "libras", "EUR": "euros", "USD": "dólares"},
        r"(?:º|ª|°)",
    ),
    "nl": Lang(
        ",",
        tuple(
            "januari februari maart april mei juni juli augustus september oktober "
            "november december".split()
        ),
        "procent",
        "{h} uur {m}",
        "{h} uur",
        "{d} {m} {y}",
        {
            "°C": "graden Celsius",
            "km/h": "kilometer per uur",
            "km": "kilometer",
            "kg": "kilogram",
            "cm": "centimeter",
            "mm": "millimeter",
            "kWh": "kilowattuur",
            "m": "meter",
            "g": "gram",
            "l": "liter",
            "W": "watt",
            "°": "graden",
        },
        {"bijv.": "bijvoorbeeld", "enz.": "enzovoort", "Dr.": "dokter", "&": "en"},
        {"€": "euro", "$": "dollar", "£": "pond", "EUR": "euro", "USD": "dollar"},
    ),
    "pl": Lang(
        ",",
        tuple(
            "stycznia lutego marca kwietnia maja czerwca lipca sierpnia września "
            "października listopada grudnia".split()
        ),
        "procent",
        "{h} {m}",
        "{h}",
        "{d} {m} {y}",
        {
            "°C": "stopni Celsjusza",
            "km/h": "kilometrów na godzinę",
            "km": "kilometrów",
            "kg": "kilogramów",
            "cm": "centymetrów",
            "mm": "milimetrów",
            "kWh": "kilowatogodzin",
            "m": "metrów",
            "g": "gramów",
            "l": "litrów",
            "W": "watów",
            "°": "stopni",
        },
        {"np.": "na przykład", "itd.": "i tak dalej", "dr": "doktor", "ul.": "ulica", "&": "i"},
        {
            "€": "euro",
            "$": "dolarów",
            "£": "funtów",
            "zł": "złotych",
            "PLN": "złotych",
            "EUR": "euro",
            "USD": "dolarów",
        },
    ),
}

_CURRENCY_CODES = {
    "$": "USD",
    "€": "EUR",
    "£": "GBP",
    "zł": "PLN",
    "PLN": "PLN",
    "EUR": "EUR",
    "USD": "USD",
}
_NUMBER = r"\d{1,3}(?:[.,]\d{3})+(?:[.,]\d+)?|\d+(?:[.,]\d+)?"


@lru_cache(maxsize=32)
def _supported(lang: str) -> bool:
    try:
        num2words(1, lang=lang)
    except NotImplementedError:
        return False
    return True


def _to_float(text: str, decimal: str) -> float | int:
    """Parse "21.5" / "21,5" / "1,000" / "1.000,5" with the language's decimal mark.

    The other mark groups thousands when it is followed by groups of three digits; otherwise it
    is taken as a decimal mark too. Raises ValueError for anything else.
    """
    group = "," if decimal == "." else "."
    grouped = rf"\d{{1,3}}(?:{re.escape(group)}\d{{3}})+(?:{re.escape(decimal)}\d+)?"
    if re.fullmatch(grouped, text):
        text = text.replace(group, "")
    text = text.replace(",", ".")
    if text.count(".") > 1:
        raise ValueError(text)
    return float(text) if "." in text else int(text)


_DROP_CATEGORIES = ("Cc", "Cf", "Co", "Cs", "Cn", "So", "Sk")


def clean(text: str) -> str:
    """Drop what cannot be spoken: control and format characters, private-use and unassigned
    code points, emoji and other pictographs. Line breaks and tabs become spaces."""
    out = []
    for ch in text:
        if ch in "\n\r\t":
            out.append(" ")
        elif unicodedata.category(ch) not in _DROP_CATEGORIES or ch in "°":
            out.append(ch)
    return re.sub(r"\s{2,}", " ", "".join(out)).strip()


class Normalizer:
    """`normalize(text, language)`: callable the pipeline runs on each sentence."""

    def __call__(self, text: str, language: str) -> str:
        return normalize(clean(text), language)


def normalize(text: str, language: str) -> str:
    lang = base_language(language)
    if not _supported(lang):
        return text
    words = LANGS.get(lang)

    def say(number: float | int, **kwargs: str) -> str:
        return str(num2words(number, lang=lang, **kwargs))

    if words is not None:
        text = _abbreviations(text, words)
        text = _currencies(text, words, lang, say)
        text = _dates(text, words, lang, say)
        text = _times(text, words, say)
        text = re.sub(
            rf"({_NUMBER})\s?%", lambda m: f"{_num(m.group(1), words, say)} {words.percent}", text
        )
        text = _units(text, words, say)
        text = re.sub(
            rf"\b(\d+){words.ordinal_suffix}\b", lambda m: say(int(m.group(1)), to="ordinal"), text
        )
    decimal = words.decimal if words is not None else "."
    text = re.sub(_NUMBER, lambda m: _number_words(m.group(0), decimal, say), text)
    return re.sub(r"\s{2,}", " ", text).strip()


def _num(text: str, words: Lang, say: Callable[..., str]) -> str:
    return _number_words(text, words.decimal, say)


def _number_words(text: str, decimal: str, say: Callable[..., str]) -> str:
    digits = re.sub(r"\D", "", text)
    if len(digits) > 15:  # phone numbers, ids: digit by digit
        return " ".join(say(int(d)) for d in digits)
    try:
        return say(_to_float(text, decimal))
    except (ValueError, OverflowError, NotImplementedError):
        # Not one number ("1.2.3", a version): speak each group of digits on its own.
        return re.sub(r"\d+", lambda m: f" {say(int(m.group()))} ", text).strip()


def _abbreviations(text: str, words: Lang) -> str:
    for short, long in sorted(words.abbreviations.items(), key=lambda kv: -len(kv[0])):
        pattern = re.escape(short)
        if short[0].isalpha():
            pattern = r"(?<![\w])" + pattern
        if short[-1].isalpha():
            pattern += r"(?![\w])"
        text = re.sub(pattern, long, text)
    return text


def _currencies(text: str, words: Lang, lang: str, say: Callable[..., str]) -> str:
    symbols = "|".join(re.escape(s) for s in sorted(words.currencies, key=len, reverse=True))

    def spoken(amount: str, symbol: str) -> str:
        try:
            value = _to_float(amount, words.decimal)
            if isinstance(value, float) and not value.is_integer():
                return say(value, to="currency", currency=_CURRENCY_CODES[symbol])
        except (NotImplementedError, KeyError, ValueError):
            pass
        return f"{_num(amount, words, say)} {words.currencies[symbol]}"

    text = re.sub(rf"({symbols})\s?({_NUMBER})", lambda m: spoken(m.group(2), m.group(1)), text)
    return re.sub(
        rf"({_NUMBER})\s?({symbols})(?![\w])", lambda m: spoken(m.group(1), m.group(2)), text
    )


def _dates(text: str, words: Lang, lang: str, say: Callable[..., str]) -> str:
    def spoken(day: str, month: str, year: str) -> str:
        d, m, y = int(day), int(month), int(year)
        if not (1 <= m <= 12 and 1 <= d <= 31):
            return f"{day}.{month}.{year}"
        return words.date.format(d=say(d, to="ordinal"), m=words.months[m - 1], y=say(y, to="year"))

    text = re.sub(
        r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b",
        lambda m: spoken(m.group(3), m.group(2), m.group(1)),
        text,
    )
    if lang == "en":
        return re.sub(
            r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b",
            lambda m: spoken(m.group(2), m.group(1), m.group(3)),
            text,
        )
    return re.sub(
        r"\b(\d{1,2})[./](\d{1,2})[./](\d{4})\b",
        lambda m: spoken(m.group(1), m.group(2), m.group(3)),
        text,
    )


def _times(text: str, words: Lang, say: Callable[..., str]) -> str:
    def spoken(match: re.Match[str]) -> str:
        h, m = int(match.group(1)), int(match.group(2))
        if h > 24 or m > 59:
            return match.group(0)
        if m == 0:
            return words.time_full.format(h=say(h))
        minutes = say(m) if m >= 10 or words is not LANGS["en"] else f"oh {say(m)}"
        return words.time.format(h=say(h), m=minutes)

    return re.sub(r"\b(\d{1,2}):(\d{2})\b(?:\s?(?:Uhr|uur|h)\b)?", spoken, text)


def _units(text: str, words: Lang, say: Callable[..., str]) -> str:
    symbols = "|".join(re.escape(u) for u in sorted(words.units, key=len, reverse=True))
    return re.sub(
        rf"({_NUMBER})\s?({symbols})(?![\w/])",
        lambda m: f"{_num(m.group(1), words, say)} {words.units[m.group(2)]}",
        text,
    )
