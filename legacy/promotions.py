"""The promotions tool: not a server but an export folder it drops CSV files into.

The tool's marketing users maintain promotions in a desktop application that exports two files
the way Excel would save them (UTF-8 with a byte order mark, ``;`` separated, CRLF, a header row
with the tool's own German column names):

``promotions.csv`` (one row per rule)
    ``AKTION_ID;BEZEICHNUNG;AKTIONSART;WERT;WERTTYP;ARTIKEL;WARENGRUPPEN;MARKEN;GUELTIG_AB;
    UHRZEIT_AB;GUELTIG_BIS;UHRZEIT_BIS;PRIORITAET;EXKLUSIV;KOMBI_GRUPPE;KAUF_MENGE;ZAHL_MENGE;
    GRATIS_MENGE;SET_ARTIKEL;MINDESTUMSATZ;GUTSCHEIN_CODE;KUNDENSTUFEN;KUNDEN_NR;BONUSPUNKTE``

``coupons.csv`` (one row per coupon code)
    ``GUTSCHEIN_CODE;AKTION_ID;MAX_EINLOESUNGEN;MAX_PRO_KUNDE`` (empty or 0: unlimited)

Quirks an adapter has to handle:

- ``AKTIONSART`` uses the tool's codes (``AKTIONSARTEN`` below), ``WERTTYP`` is ``P`` (percent)
  or ``B`` (Betrag, an amount in the shop currency, which the files never name).
- Decimals use a comma (``4,99``; thousands may be grouped with dots, ``1.234,56``).
- Booleans are ``Y``/``N``. Lists are ``|`` separated; older exports used ``,`` (tiers still do).
- Validity is in Europe/Berlin local time, as the users think of it: ``GUELTIG_AB`` dd.mm.yyyy is
  the first day (inclusive) and ``GUELTIG_BIS`` the last day (inclusive), so the rule runs from
  00:00 of the first day to 00:00 of the day after the last. The optional ``UHRZEIT_AB`` (HH:MM)
  moves the start within the first day; the optional ``UHRZEIT_BIS`` makes the rule end at that
  time on the ``GUELTIG_BIS`` day instead of at its end. ``31.12.9999`` means "no end". Times
  are wall-clock times: one in the hour repeated when summer time ends is read as summer time.
- Files are replaced while readers run; this writer replaces them atomically (a temporary file in
  the same folder, then ``os.replace``), other producers may not.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from legacy.demo import DemoEstate
from legacy.demo_promotions import DemoPromotion

PROMOTIONS_FILE = "promotions.csv"
COUPONS_FILE = "coupons.csv"

PROMOTION_COLUMNS: tuple[str, ...] = (
    "AKTION_ID", "BEZEICHNUNG", "AKTIONSART", "WERT", "WERTTYP",
    "ARTIKEL", "WARENGRUPPEN", "MARKEN",
    "GUELTIG_AB", "UHRZEIT_AB", "GUELTIG_BIS", "UHRZEIT_BIS",
    "PRIORITAET", "EXKLUSIV", "KOMBI_GRUPPE",
    "KAUF_MENGE", "ZAHL_MENGE", "GRATIS_MENGE", "SET_ARTIKEL", "MINDESTUMSATZ",
    "GUTSCHEIN_CODE", "KUNDENSTUFEN", "KUNDEN_NR", "BONUSPUNKTE",
)  # fmt: skip
COUPON_COLUMNS: tuple[str, ...] = (
    "GUTSCHEIN_CODE",
    "AKTION_ID",
    "MAX_EINLOESUNGEN",
    "MAX_PRO_KUNDE",
)

AKTIONSARTEN: Mapping[str, str] = {
    "PERCENT_OFF": "RABATT_PROZENT",
    "AMOUNT_OFF": "RABATT_BETRAG",
    "FIXED_PRICE": "FESTPREIS",
    "MULTI_BUY": "X_FUER_Y",
    "BUY_X_GET_Y": "X_PLUS_Y",
    "BUNDLE_PRICE": "SETPREIS",
    "BASKET_THRESHOLD": "WARENKORB",
}
"""Neutral rule kind -> the tool's ``AKTIONSART`` code."""

WERTTYPEN: Mapping[str, str] = {"PERCENT": "P", "AMOUNT": "B"}

BERLIN = ZoneInfo("Europe/Berlin")
_LIST_SEPARATORS = ("|", ",")


def write_data(estate: DemoEstate, directory: Path) -> None:
    """Export ``estate.promotions`` into ``directory`` as the tool does, replacing each file
    atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    promotions = estate.promotions
    publish(directory, PROMOTIONS_FILE, [promotion_row(p) for p in promotions])
    coupons = [row for row in (coupon_row(p) for p in promotions) if row is not None]
    publish(directory, COUPONS_FILE, coupons)


def publish(
    directory: Path,
    name: str,
    rows: Iterable[Mapping[str, str]],
    columns: Sequence[str] | None = None,
) -> Path:
    """Replace ``directory/name`` atomically with a header and ``rows`` in the tool's format.

    ``columns`` defaults to the columns of ``promotions.csv`` or ``coupons.csv`` by ``name``;
    a row's missing columns are left empty, extra keys raise ValueError."""
    header = tuple(columns) if columns is not None else _default_columns(name)
    return replace_file(directory, name, render(rows, header))


def render(rows: Iterable[Mapping[str, str]], columns: Sequence[str]) -> bytes:
    """The bytes of one export: UTF-8 with BOM, ``;`` separated, CRLF, header first."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), delimiter=";", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8-sig")


def replace_file(directory: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to a temporary file next to ``directory/name``, then rename it over the
    target, so a reader sees either the old file or the new one, never a mix."""
    target = directory / name
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it private; the feed is read by others
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def promotion_row(promotion: DemoPromotion) -> dict[str, str]:
    """One ``promotions.csv`` row for ``promotion``, every value as the tool writes it."""
    first_day, start_time = _start_columns(promotion.valid_from)
    last_day, end_time = _end_columns(promotion.valid_until)
    return {
        "AKTION_ID": promotion.id,
        "BEZEICHNUNG": promotion.title,
        "AKTIONSART": AKTIONSARTEN[promotion.kind],
        "WERT": format_decimal(promotion.value),
        "WERTTYP": WERTTYPEN[promotion.value_type],
        "ARTIKEL": format_list(promotion.skus),
        "WARENGRUPPEN": format_list(promotion.categories),
        "MARKEN": format_list(promotion.brands),
        "GUELTIG_AB": first_day,
        "UHRZEIT_AB": start_time,
        "GUELTIG_BIS": last_day,
        "UHRZEIT_BIS": end_time,
        "PRIORITAET": str(promotion.priority),
        "EXKLUSIV": "Y" if promotion.exclusive else "N",
        "KOMBI_GRUPPE": promotion.stacking_group or "",
        "KAUF_MENGE": _count(promotion.buy_quantity),
        "ZAHL_MENGE": _count(promotion.pay_quantity),
        "GRATIS_MENGE": _count(promotion.get_quantity),
        "SET_ARTIKEL": format_list(promotion.bundle_skus),
        "MINDESTUMSATZ": "" if promotion.threshold is None else format_decimal(promotion.threshold),
        "GUTSCHEIN_CODE": promotion.coupon_code or "",
        # The tool's tier picker still exports the old comma-separated form.
        "KUNDENSTUFEN": format_list(promotion.tiers, separator=","),
        "KUNDEN_NR": promotion.customer_id or "",
        "BONUSPUNKTE": _count(promotion.extra_points),
    }


def coupon_row(promotion: DemoPromotion) -> dict[str, str] | None:
    """The ``coupons.csv`` row of ``promotion``'s coupon, or None when it has no coupon."""
    if promotion.coupon_code is None:
        return None
    return {
        "GUTSCHEIN_CODE": promotion.coupon_code,
        "AKTION_ID": promotion.id,
        "MAX_EINLOESUNGEN": _limit(promotion.coupon_max_uses),
        "MAX_PRO_KUNDE": _limit(promotion.coupon_max_uses_per_customer),
    }


def format_decimal(value: Decimal) -> str:
    """``Decimal('4.99')`` -> ``'4,99'``, keeping the exponent (``5.00`` stays ``5,00``)."""
    return format(value, "f").replace(".", ",")


def format_list(items: Iterable[str], separator: str = "|") -> str:
    values = list(items)
    for value in values:
        if any(mark in value for mark in _LIST_SEPARATORS):
            raise ValueError(f"list item {value!r} contains a list separator")
    return separator.join(values)


def format_day(instant: datetime) -> tuple[str, str]:
    """``instant`` in Berlin local time as the tool's (dd.mm.yyyy, HH:MM) pair."""
    if instant.tzinfo is None:
        raise ValueError(f"{instant} has no time zone")
    local = instant.astimezone(BERLIN)
    if local.second or local.microsecond:
        raise ValueError(f"{instant} is not on a whole minute; the tool stores minutes")
    return local.strftime("%d.%m.%Y"), local.strftime("%H:%M")


def _start_columns(instant: datetime) -> tuple[str, str]:
    day, clock = format_day(instant)
    return day, "" if clock == "00:00" else clock


def _end_columns(instant: datetime) -> tuple[str, str]:
    """An end at local midnight is written as the inclusive last day with no time, the way
    the tool's users enter it; any other end keeps its day and time."""
    day, clock = format_day(instant)
    if clock != "00:00":
        return day, clock
    last_day = instant.astimezone(BERLIN).date() - timedelta(days=1)
    return last_day.strftime("%d.%m.%Y"), ""


def _count(number: int) -> str:
    return "" if number == 0 else str(number)


def _limit(number: int | None) -> str:
    return "" if number is None else str(number)


def _default_columns(name: str) -> tuple[str, ...]:
    columns = {PROMOTIONS_FILE: PROMOTION_COLUMNS, COUPONS_FILE: COUPON_COLUMNS}
    if name not in columns:
        raise ValueError(f"no default columns for {name!r}; pass columns=")
    return columns[name]
