"""The promotions tool's CSV export folder as a ``PromotionsPort``.

The tool drops ``promotions.csv`` (one row per rule) and ``coupons.csv`` (one row per coupon code)
into a folder and replaces them while the gateway runs. Both are Excel-style exports: UTF-8 with
a byte order mark, ``;`` separated, a header row with the tool's German column names, decimals
with a comma, ``Y``/``N`` booleans, lists separated by ``|`` (or ``,`` in older exports), and
validity as Europe/Berlin calendar days, first and last day inclusive, with optional HH:MM
times. Amounts are in the shop currency, which the files never name.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from time import monotonic
from typing import TYPE_CHECKING, TypeVar
from zoneinfo import ZoneInfo

from adapters.ports import (
    BackendUnavailable,
    Coupon,
    Money,
    PromotionKind,
    PromotionRule,
    PromotionSet,
    PromotionTarget,
    ValueType,
)

if TYPE_CHECKING:
    from _csv import Reader

BACKEND = "promotions"
PROMOTIONS_FILE = "promotions.csv"
COUPONS_FILE = "coupons.csv"
BERLIN = ZoneInfo("Europe/Berlin")

_LOG = logging.getLogger(__name__)
_KINDS: Mapping[str, PromotionKind] = {
    "RABATT_PROZENT": PromotionKind.PERCENT_OFF,
    "RABATT_BETRAG": PromotionKind.AMOUNT_OFF,
    "FESTPREIS": PromotionKind.FIXED_PRICE,
    "X_FUER_Y": PromotionKind.MULTI_BUY,
    "X_PLUS_Y": PromotionKind.BUY_X_GET_Y,
    "SETPREIS": PromotionKind.BUNDLE_PRICE,
    "WARENKORB": PromotionKind.BASKET_THRESHOLD,
}
_VALUE_TYPES: Mapping[str, ValueType] = {"P": ValueType.PERCENT, "B": ValueType.AMOUNT}
_FLAGS: Mapping[str, bool] = {"Y": True, "N": False, "": False}
_RULE_COLUMNS = ("AKTION_ID", "BEZEICHNUNG", "AKTIONSART", "WERT", "WERTTYP", "GUELTIG_AB",
                 "GUELTIG_BIS")  # fmt: skip
_COUPON_COLUMNS = ("GUTSCHEIN_CODE", "AKTION_ID", "MAX_EINLOESUNGEN", "MAX_PRO_KUNDE")
_DAY = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")
_INTEGER = re.compile(r"\d+")
_DECIMAL = re.compile(r"-?(\d+|\d{1,3}(\.\d{3})+)(,\d+)?")

Signature = tuple[tuple[str, int, int, int], ...]
"""Name, size, mtime_ns and inode of every ``*.csv`` in the folder, by name. The inode tells
an ``os.replace`` by a file of the same size within the file system's timestamp tick."""

_Choice = TypeVar("_Choice")


class CsvPromotions:
    """Promotion rules and coupons read from the promotions tool's export ``folder``.

    ``promotions()`` looks at the folder at most every ``check_interval`` seconds of ``clock``
    and parses the files again only when their names, sizes or modification times changed.
    A file that cannot be parsed (bad value, unknown kind, cut off mid-write) is logged with
    its file and line and ignored: the last good set is served on. Without any good set yet,
    or when the folder is missing or unreadable, ``promotions()`` raises BackendUnavailable.
    ``parses`` counts how often the files were read and parsed.
    """

    def __init__(
        self,
        folder: Path,
        *,
        currency: str = "EUR",
        check_interval: float = 1.0,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        self.folder = folder
        self.parses = 0
        self._currency = currency
        self._check_interval = check_interval
        self._clock = clock
        self._lock = asyncio.Lock()
        self._checked_at: float | None = None
        self._signature: Signature | None = None
        self._current: PromotionSet | None = None
        self._unreadable: OSError | None = None
        self._failure: FeedError | None = None

    async def promotions(self) -> PromotionSet:
        """The current rule set; ``version`` is a hash of the files' content."""
        if not self._check_due():
            return self._answer()
        async with self._lock:
            if self._check_due():
                await self._check()
            return self._answer()

    async def aclose(self) -> None:
        """Nothing to release: the folder is read on demand."""

    def _check_due(self) -> bool:
        checked_at = self._checked_at
        return checked_at is None or self._clock() - checked_at >= self._check_interval

    async def _check(self) -> None:
        checked_at = self._clock()
        try:
            signature = await asyncio.to_thread(folder_signature, self.folder)
        except OSError as exc:
            self._unreadable = exc
        else:
            self._unreadable = None
            if signature != self._signature:
                await self._reload(signature)
        self._checked_at = checked_at

    async def _reload(self, signature: Signature) -> None:
        self.parses += 1
        try:
            loaded = await asyncio.to_thread(load_feed, self.folder, self._currency)
        except FeedError as exc:
            self._failure = exc
            serving = self._current.version if self._current else "nothing (no good feed yet)"
            _LOG.warning("promotions feed rejected: %s; serving %s", exc, serving)
        else:
            self._current, self._failure = loaded, None
        # Recorded only once handled, so a cancelled reload is retried at the next check.
        self._signature = signature

    def _answer(self) -> PromotionSet:
        if self._unreadable is not None:
            detail = f"cannot read folder {self.folder}: {self._unreadable}"
            raise BackendUnavailable(BACKEND, detail) from self._unreadable
        if self._current is None:
            detail = f"no valid feed in {self.folder}: {self._failure}"
            raise BackendUnavailable(BACKEND, detail) from self._failure
        return self._current


class FeedError(ValueError):
    """A feed file that cannot be used as it is; ``line`` is 1-based (the header is line 1)."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file} line {line}: {message}" if line else f"{file}: {message}")
        self.file = file
        self.line = line


def folder_signature(folder: Path) -> Signature:
    """Raises OSError when ``folder`` is missing or not a readable directory."""
    with os.scandir(folder) as entries:
        files = [entry for entry in entries if entry.name.endswith(".csv") and entry.is_file()]
        stats = [(entry.name, entry.stat()) for entry in files]
    return tuple(
        sorted((name, info.st_size, info.st_mtime_ns, info.st_ino) for name, info in stats)
    )


def load_feed(folder: Path, currency: str) -> PromotionSet:
    """Read and parse both files of ``folder``. Raises FeedError naming file and line."""
    rules_data = _read(folder / PROMOTIONS_FILE, required=True)
    coupons_data = _read(folder / COUPONS_FILE, required=False)
    rules = [(row.line, _rule(row, currency)) for row in _rows(PROMOTIONS_FILE, rules_data)]
    coupons = [(row.line, _coupon(row)) for row in _rows(COUPONS_FILE, coupons_data)]
    _check_references(rules, coupons)
    digest = hashlib.sha256()
    for name, data in ((PROMOTIONS_FILE, rules_data), (COUPONS_FILE, coupons_data)):
        digest.update(f"{name}:{len(data or b'')}:".encode())
        digest.update(data or b"")
    return PromotionSet(
        rules=tuple(rule for _, rule in rules),
        coupons=tuple(coupon for _, coupon in coupons),
        version=digest.hexdigest()[:16],
    )


def _read(path: Path, *, required: bool) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        if required:
            raise FeedError(path.name, 0, "file is missing") from exc
        return None
    except OSError as exc:
        raise FeedError(path.name, 0, f"cannot read: {exc}") from exc


# --------------------------------------------------------------------------- rows and fields


@dataclass(frozen=True, slots=True)
class _Row:
    """One record of a feed file, with typed access that reports the file and line."""

    file: str
    line: int
    fields: Mapping[str, str]

    def error(self, message: str) -> FeedError:
        return FeedError(self.file, self.line, message)

    def text(self, column: str) -> str:
        return self.fields.get(column, "")

    def required(self, column: str) -> str:
        value = self.text(column)
        if not value:
            raise self.error(f"{column} is empty")
        return value

    def choice(self, column: str, choices: Mapping[str, _Choice]) -> _Choice:
        value = self.text(column).upper()
        if value not in choices:
            raise self.error(f"{column} {value!r} is not one of {', '.join(sorted(choices))}")
        return choices[value]

    def integer(self, column: str) -> int:
        value = self.text(column)
        if not value:
            return 0
        if not _INTEGER.fullmatch(value):
            raise self.error(f"{column} {value!r} is not a whole number")
        return int(value)

    def decimal(self, column: str) -> Decimal | None:
        """German notation: ``4,99`` or ``1.234,56``; empty is None."""
        value = self.text(column)
        if not value:
            return None
        if not _DECIMAL.fullmatch(value):
            raise self.error(f"{column} {value!r} is not a decimal like 4,99")
        return Decimal(value.replace(".", "").replace(",", "."))

    def items(self, column: str) -> tuple[str, ...]:
        """A list in ``|`` form, or in the older ``,`` form when there is no pipe."""
        value = self.text(column)
        separator = "|" if "|" in value else ","
        return tuple(item.strip() for item in value.split(separator) if item.strip())

    def day(self, column: str) -> date:
        value = self.required(column)
        if (match := _DAY.fullmatch(value)) is not None:
            with contextlib.suppress(ValueError):  # 31.02.2026 matches but is no day
                return date(int(match[3]), int(match[2]), int(match[1]))
        raise self.error(f"{column} {value!r} is not a date dd.mm.yyyy")

    def clock(self, column: str) -> time | None:
        value = self.text(column)
        if not value:
            return None
        if (match := _CLOCK.fullmatch(value)) is not None:
            with contextlib.suppress(ValueError):
                return time(int(match[1]), int(match[2]))
        raise self.error(f"{column} {value!r} is not a time HH:MM")


def _rows(file: str, data: bytes | None) -> list[_Row]:
    """The records of one file, keyed by header; a missing optional file has none."""
    if data is None:
        return []
    if data and not data.endswith(b"\n"):
        raise FeedError(file, data.count(b"\n") + 1, "last line is cut off (still being written?)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FeedError(file, data[: exc.start].count(b"\n") + 1, "not UTF-8") from exc
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=";", strict=True)
    try:
        return _records(file, reader)
    except csv.Error as exc:
        raise FeedError(file, reader.line_num, f"broken CSV: {exc}") from exc


def _records(file: str, reader: Reader) -> list[_Row]:
    header = [column.strip().upper() for column in next(reader, [])]
    required = _RULE_COLUMNS if file == PROMOTIONS_FILE else _COUPON_COLUMNS
    missing = [column for column in required if column not in header]
    if missing:
        raise FeedError(file, 1, f"header lacks {', '.join(missing)}")
    rows = []
    for fields in reader:
        if not any(field.strip() for field in fields):
            continue  # Excel leaves rows of bare separators behind
        if len(fields) != len(header):
            found = f"{len(fields)} fields where the header has {len(header)}"
            raise FeedError(file, reader.line_num, found)
        values = dict(zip(header, (field.strip() for field in fields), strict=True))
        rows.append(_Row(file, reader.line_num, values))
    return rows


# --------------------------------------------------------------------------- rules and coupons


def _rule(row: _Row, currency: str) -> PromotionRule:
    valid_from, valid_until = _validity(row)
    threshold = row.decimal("MINDESTUMSATZ")
    rule = PromotionRule(
        id=row.required("AKTION_ID"),
        title=row.text("BEZEICHNUNG"),
        kind=row.choice("AKTIONSART", _KINDS),
        value=row.decimal("WERT") or Decimal(0),
        value_type=row.choice("WERTTYP", _VALUE_TYPES),
        currency=currency,
        target=PromotionTarget(
            skus=frozenset(row.items("ARTIKEL")),
            categories=frozenset(row.items("WARENGRUPPEN")),
            brands=frozenset(row.items("MARKEN")),
        ),
        valid_from=valid_from,
        valid_until=valid_until,
        priority=row.integer("PRIORITAET"),
        exclusive=row.choice("EXKLUSIV", _FLAGS),
        stacking_group=row.text("KOMBI_GRUPPE") or None,
        buy_quantity=row.integer("KAUF_MENGE"),
        pay_quantity=row.integer("ZAHL_MENGE"),
        get_quantity=row.integer("GRATIS_MENGE"),
        bundle_skus=row.items("SET_ARTIKEL"),
        threshold=None if threshold is None else Money(threshold, currency),
        coupon_code=row.text("GUTSCHEIN_CODE") or None,
        tiers=frozenset(tier.upper() for tier in row.items("KUNDENSTUFEN")),
        customer_id=row.text("KUNDEN_NR") or None,
        extra_points=row.integer("BONUSPUNKTE"),
    )
    _check_kind(row, rule)
    return rule


def _validity(row: _Row) -> tuple[datetime, datetime]:
    """[first day at UHRZEIT_AB or 00:00, last day at UHRZEIT_BIS or the next midnight) in
    Berlin, as UTC."""
    first, last = row.day("GUELTIG_AB"), row.day("GUELTIG_BIS")
    start = _berlin(first, row.clock("UHRZEIT_AB") or time())
    end_clock = row.clock("UHRZEIT_BIS")
    if end_clock is not None:
        end = _berlin(last, end_clock)
    elif last == date.max:
        end = datetime.max.replace(tzinfo=UTC)  # 31.12.9999: the tool's "no end"
    else:
        end = _berlin(last + timedelta(days=1), time())
    if end <= start:
        raise row.error("GUELTIG_BIS ends before GUELTIG_AB starts")
    return start, end


def _berlin(day: date, clock: time) -> datetime:
    return datetime.combine(day, clock, tzinfo=BERLIN).astimezone(UTC)


def _check_kind(row: _Row, rule: PromotionRule) -> None:
    """Refuse rows the engine could only misapply: the quantities or items a kind needs."""
    kind = rule.kind
    if kind is PromotionKind.MULTI_BUY and not rule.buy_quantity > rule.pay_quantity > 0:
        raise row.error("X_FUER_Y needs KAUF_MENGE greater than ZAHL_MENGE greater than 0")
    if kind is PromotionKind.BUY_X_GET_Y and not (rule.buy_quantity and rule.get_quantity):
        raise row.error("X_PLUS_Y needs KAUF_MENGE and GRATIS_MENGE")
    if kind is PromotionKind.BUNDLE_PRICE and not rule.bundle_skus:
        raise row.error("SETPREIS needs SET_ARTIKEL")
    if kind is PromotionKind.BASKET_THRESHOLD and rule.threshold is None:
        raise row.error("WARENKORB needs MINDESTUMSATZ")


def _coupon(row: _Row) -> Coupon:
    def limit(column: str) -> int | None:
        return row.integer(column) or None  # the tool exports 0 or nothing for "unlimited"

    return Coupon(
        code=row.required("GUTSCHEIN_CODE"),
        promotion_id=row.required("AKTION_ID"),
        max_uses=limit("MAX_EINLOESUNGEN"),
        max_uses_per_customer=limit("MAX_PRO_KUNDE"),
    )


def _check_references(
    rules: Sequence[tuple[int, PromotionRule]], coupons: Sequence[tuple[int, Coupon]]
) -> None:
    """Ids and codes are unique, and each coupon row and its rule name each other; a coupon
    without its limits row must not be honoured as unlimited."""
    codes: dict[str, str | None] = {}
    for line, rule in rules:
        if rule.id in codes:
            raise FeedError(PROMOTIONS_FILE, line, f"AKTION_ID {rule.id} appears twice")
        codes[rule.id] = rule.coupon_code
    listed: set[str] = set()
    for line, coupon in coupons:
        if coupon.code in listed:
            raise FeedError(COUPONS_FILE, line, f"GUTSCHEIN_CODE {coupon.code} appears twice")
        if codes.get(coupon.promotion_id, "") != coupon.code:
            detail = (
                f"AKTION_ID {coupon.promotion_id} has no rule with GUTSCHEIN_CODE {coupon.code}"
            )
            raise FeedError(COUPONS_FILE, line, detail)
        listed.add(coupon.code)
    for line, rule in rules:
        if rule.coupon_code is not None and rule.coupon_code not in listed:
            detail = f"GUTSCHEIN_CODE {rule.coupon_code} has no row in {COUPONS_FILE}"
            raise FeedError(PROMOTIONS_FILE, line, detail)
