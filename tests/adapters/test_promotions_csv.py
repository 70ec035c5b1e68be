"""CsvPromotions against the promotions tool's real export files, written by legacy.promotions."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.ports import (
    BackendUnavailable,
    Money,
    PromotionSet,
    PromotionsPort,
    PromotionTarget,
)
from adapters.promotions_csv import CsvPromotions
from legacy.demo import DemoEstate
from legacy.demo_promotions import DemoPromotion
from legacy.promotions import (
    COUPONS_FILE,
    PROMOTION_COLUMNS,
    PROMOTIONS_FILE,
    coupon_row,
    promotion_row,
    publish,
    render,
    replace_file,
)
from tests.fakes import rule_from_demo
from tests.support import write_systems


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def seeded(truth: DemoEstate, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny estate's export folder, shared by the tests that only read it."""
    data_dir = tmp_path_factory.mktemp("promotions-seeded")
    write_systems(truth, data_dir, ["promotions"])
    return data_dir / "promotions"


@pytest.fixture
def feed(truth: DemoEstate, tmp_path: Path) -> Path:
    """A fresh export folder of the tiny estate, for tests that replace its files."""
    write_systems(truth, tmp_path, ["promotions"])
    return tmp_path / "promotions"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


EXPECTED_RULE_FIELDS = {"id", "title", "kind", "value", "value_type", "skus", "categories",
                        "brands", "valid_from", "valid_until", "priority", "exclusive",
                        "stacking_group", "buy_quantity", "pay_quantity", "get_quantity",
                        "bundle_skus", "threshold", "coupon_code", "tiers", "customer_id",
                        "extra_points"}  # fmt: skip
EXPECTED_COUPON_FIELDS = {"coupon_code", "coupon_max_uses", "coupon_max_uses_per_customer"}


def publish_feed(
    folder: Path, rules: list[dict[str, str]], coupons: list[dict[str, str]] | None = None
) -> None:
    publish(folder, PROMOTIONS_FILE, rules)
    publish(folder, COUPONS_FILE, coupons or [])


def row_of(truth: DemoEstate, promotion_id: str, **changes: str) -> dict[str, str]:
    promotion = next(p for p in truth.promotions if p.id == promotion_id)
    return promotion_row(promotion) | changes


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


END_OF_TIME = datetime.max.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- round trip


async def test_is_a_promotions_port(seeded: Path) -> None:
    adapter = CsvPromotions(seeded)

    assert isinstance(adapter, PromotionsPort)
    await adapter.aclose()


async def test_every_demo_promotion_round_trips_into_an_equal_rule(
    seeded: Path, truth: DemoEstate
) -> None:
    adapter = CsvPromotions(seeded)

    found = await adapter.promotions()

    assert found.rules == tuple(rule_from_demo(promotion) for promotion in truth.promotions)
    assert {rule.valid_from.tzinfo for rule in found.rules} == {UTC}


async def test_every_demo_coupon_round_trips_with_its_limits(
    seeded: Path, truth: DemoEstate
) -> None:
    adapter = CsvPromotions(seeded)

    found = await adapter.promotions()

    expected = [(p.coupon_code, p.id, p.coupon_max_uses, p.coupon_max_uses_per_customer)
                for p in truth.promotions if p.coupon_code]  # fmt: skip
    assert [(c.code, c.promotion_id, c.max_uses, c.max_uses_per_customer)
            for c in found.coupons] == expected  # fmt: skip
    assert len(expected) == 6


def test_the_round_trip_checks_every_demo_promotion_field() -> None:
    assert {f.name for f in fields(DemoPromotion)} == EXPECTED_RULE_FIELDS | EXPECTED_COUPON_FIELDS


async def test_coupon_gated_rules_name_their_code(seeded: Path, truth: DemoEstate) -> None:
    found = await CsvPromotions(seeded).promotions()

    gated = {rule.id: rule.coupon_code for rule in found.rules if rule.coupon_code}
    assert gated == {p.id: p.coupon_code for p in truth.promotions if p.coupon_code}
    assert {coupon.code: coupon.promotion_id for coupon in found.coupons} == {
        code: promotion_id for promotion_id, code in gated.items()
    }


async def test_tier_lists_and_personal_offers_survive(seeded: Path, truth: DemoEstate) -> None:
    found = await CsvPromotions(seeded).promotions()

    tiers = {rule.id: rule.tiers for rule in found.rules if rule.tiers}
    personal = {rule.id: rule.customer_id for rule in found.rules if rule.customer_id}
    assert tiers == {p.id: frozenset(p.tiers) for p in truth.promotions if p.tiers}
    assert tiers["PR023"] == frozenset({"GOLD", "PLATINUM"})
    assert personal == {"PR027": "C0001", "PR028": "C0002"}


async def test_amounts_are_in_the_configured_currency(seeded: Path) -> None:
    found = await CsvPromotions(seeded, currency="CHF").promotions()

    assert {rule.currency for rule in found.rules} == {"CHF"}
    assert {rule.threshold.currency for rule in found.rules if rule.threshold} == {"CHF"}


# --------------------------------------------------------------------------- the tool's format


def test_export_is_an_excel_style_csv(seeded: Path) -> None:
    raw = (seeded / PROMOTIONS_FILE).read_bytes()
    lines = raw.decode("utf-8-sig").split("\r\n")
    rows = {line.split(";")[0]: line for line in lines[1:] if line}

    assert raw.startswith(b"\xef\xbb\xbfAKTION_ID;BEZEICHNUNG;AKTIONSART;WERT;")
    assert raw.endswith(b"\r\n")
    assert lines[0] == ";".join(PROMOTION_COLUMNS)
    assert ";FESTPREIS;7,99;B;" in rows["PR007"]
    assert ";100,00;" in rows["PR014"]  # MINDESTUMSATZ
    assert ";GOLD,PLATINUM;" in rows["PR023"]
    # A UTC midnight is 01:00 in Berlin in winter: the tool needs a time of day for it.
    assert ";01.01.2026;01:00;01.01.2031;01:00;" in rows["PR001"]
    assert sorted(path.name for path in seeded.iterdir()) == [COUPONS_FILE, PROMOTIONS_FILE]


@pytest.mark.parametrize(
    ("first_day", "start", "last_day", "end", "valid_from", "valid_until"),
    [
        # Summer time starts 29.03.2026 at 02:00: that day has 23 hours.
        ("29.03.2026", "", "29.03.2026", "", utc(2026, 3, 28, 23), utc(2026, 3, 29, 22)),
        # Winter time returns 25.10.2026 at 03:00: that day has 25 hours.
        ("25.10.2026", "", "25.10.2026", "", utc(2026, 10, 24, 22), utc(2026, 10, 25, 23)),
        ("29.03.2026", "", "25.10.2026", "", utc(2026, 3, 28, 23), utc(2026, 10, 25, 23)),
        ("1.7.2026", "", "31.07.2026", "", utc(2026, 6, 30, 22), utc(2026, 7, 31, 22)),
        ("01.07.2026", "06:00", "02.07.2026", "20:30", utc(2026, 7, 1, 4), utc(2026, 7, 2, 18, 30)),
        # The tool's "no end".
        ("01.12.2026", "", "31.12.9999", "", utc(2026, 11, 30, 23), END_OF_TIME),
    ],
)  # fmt: skip
async def test_validity_is_berlin_days_from_first_to_last_inclusive(
    feed: Path,
    truth: DemoEstate,
    first_day: str,
    start: str,
    last_day: str,
    end: str,
    valid_from: datetime,
    valid_until: datetime,
) -> None:
    row = row_of(truth, "PR001", GUELTIG_AB=first_day, UHRZEIT_AB=start, GUELTIG_BIS=last_day,
                 UHRZEIT_BIS=end)  # fmt: skip
    publish_feed(feed, [row])

    [rule] = (await CsvPromotions(feed).promotions()).rules

    assert (rule.valid_from, rule.valid_until) == (valid_from, valid_until)


async def test_comma_decimals_thousand_groups_and_either_list_separator(
    feed: Path, truth: DemoEstate
) -> None:
    row = row_of(truth, "PR014", WERT="4,99", MINDESTUMSATZ="1.234,50", ARTIKEL="111, 222",
                 WARENGRUPPEN="home|outdoor", MARKEN="Kiesel & Co|Alpenwerk",
                 KUNDENSTUFEN="gold|Platinum", EXKLUSIV="y")  # fmt: skip
    publish_feed(feed, [row])

    [rule] = (await CsvPromotions(feed).promotions()).rules

    assert rule.value == Decimal("4.99")
    assert rule.threshold == Money(Decimal("1234.50"), "EUR")
    assert rule.target == PromotionTarget(
        frozenset({"111", "222"}), frozenset({"home", "outdoor"}),
        frozenset({"Kiesel & Co", "Alpenwerk"}),
    )  # fmt: skip
    assert rule.tiers == frozenset({"GOLD", "PLATINUM"})
    assert rule.exclusive is True


async def test_a_file_without_byte_order_mark_and_with_extra_columns_is_read(
    feed: Path, truth: DemoEstate
) -> None:
    columns = (*PROMOTION_COLUMNS, "ERSTELLT_VON")
    row = row_of(truth, "PR017", ERSTELLT_VON="m.huber")
    body = render([row], columns).removeprefix(b"\xef\xbb\xbf")
    replace_file(feed, PROMOTIONS_FILE, body)
    publish(feed, COUPONS_FILE, [coupon_row(truth.promotions[16]) or {}])

    found = await CsvPromotions(feed).promotions()

    assert found.rules == (rule_from_demo(truth.promotions[16]),)
    assert [coupon.code for coupon in found.coupons] == ["WELCOME10"]


# --------------------------------------------------------------------------- reloading


async def test_a_replaced_file_is_picked_up_after_the_check_interval(
    feed: Path, truth: DemoEstate, clock: FakeClock
) -> None:
    adapter = CsvPromotions(feed, check_interval=5.0, clock=clock)
    before = await adapter.promotions()
    rows = [promotion_row(p) for p in truth.promotions]
    rows[0] = rows[0] | {"BEZEICHNUNG": "25% off outdoor jackets", "WERT": "25"}

    publish(feed, PROMOTIONS_FILE, rows)
    clock.advance(4.9)
    within_interval = await adapter.promotions()
    clock.advance(0.1)
    after = await adapter.promotions()

    assert within_interval is before
    assert after.version != before.version
    assert after.rules[0] == replace(
        rule_from_demo(truth.promotions[0]), title="25% off outdoor jackets", value=Decimal(25)
    )
    assert after.rules[1:] == before.rules[1:]
    assert adapter.parses == 2


async def test_an_unchanged_folder_is_not_parsed_again(
    feed: Path, truth: DemoEstate, clock: FakeClock
) -> None:
    adapter = CsvPromotions(feed, check_interval=1.0, clock=clock)
    first = await adapter.promotions()

    for _ in range(5):
        clock.advance(1.0)
        again = await adapter.promotions()
        assert again is first
    assert adapter.parses == 1

    # The same content exported again is a new file: parsed again, but the same version.
    write_systems(truth, feed.parent, ["promotions"])
    clock.advance(1.0)
    rewritten = await adapter.promotions()
    assert adapter.parses == 2
    assert rewritten == first


async def test_concurrent_first_calls_parse_once(seeded: Path) -> None:
    adapter = CsvPromotions(seeded)

    answers = await asyncio.gather(*(adapter.promotions() for _ in range(20)))

    assert adapter.parses == 1
    assert all(answer is answers[0] for answer in answers)


def broken_date(truth: DemoEstate) -> bytes:
    rows = [promotion_row(p) for p in truth.promotions]
    rows[2] = rows[2] | {"GUELTIG_AB": "31.02.2026"}
    return render(rows, PROMOTION_COLUMNS)


def unknown_kind(truth: DemoEstate) -> bytes:
    rows = [promotion_row(p) for p in truth.promotions]
    rows[0] = rows[0] | {"AKTIONSART": "GRATIS_VERSAND"}
    return render(rows, PROMOTION_COLUMNS)


def half_written(truth: DemoEstate) -> bytes:
    complete = render([promotion_row(p) for p in truth.promotions], PROMOTION_COLUMNS)
    return complete[: complete.index(b"\r\nPR006;") + 20]


def unknown_coupon_promotion(truth: DemoEstate) -> bytes:
    rows = [row for row in (coupon_row(p) for p in truth.promotions) if row]
    rows.append({"GUTSCHEIN_CODE": "GHOST", "AKTION_ID": "PR999"})
    return render(rows, ("GUTSCHEIN_CODE", "AKTION_ID", "MAX_EINLOESUNGEN", "MAX_PRO_KUNDE"))


def coupon_without_limits_row(truth: DemoEstate) -> bytes:
    rows = [row for row in (coupon_row(p) for p in truth.promotions) if row]
    return render(rows[1:], ("GUTSCHEIN_CODE", "AKTION_ID", "MAX_EINLOESUNGEN", "MAX_PRO_KUNDE"))


MALFORMED: Mapping[str, tuple[str, Callable[[DemoEstate], bytes], str]] = {
    "bad date": (PROMOTIONS_FILE, broken_date, "promotions.csv line 4: GUELTIG_AB"),
    "unknown kind": (PROMOTIONS_FILE, unknown_kind, "promotions.csv line 2: AKTIONSART"),
    "half written": (PROMOTIONS_FILE, half_written, "promotions.csv line 7: last line is cut"),
    "zero bytes": (PROMOTIONS_FILE, lambda truth: b"", "promotions.csv line 1: header lacks"),
    "unknown promotion": (COUPONS_FILE, unknown_coupon_promotion, "coupons.csv line 8: AKTION_ID"),
    "no coupon row": (COUPONS_FILE, coupon_without_limits_row, "promotions.csv line 18: GUTSCH"),
}


@pytest.mark.parametrize("case", MALFORMED)
async def test_a_malformed_replacement_keeps_the_last_good_set(
    feed: Path,
    truth: DemoEstate,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    file, content, complaint = MALFORMED[case]
    adapter = CsvPromotions(feed, clock=clock)
    good = await adapter.promotions()

    replace_file(feed, file, content(truth))
    clock.advance(1.0)
    with caplog.at_level(logging.WARNING, logger="adapters.promotions_csv"):
        served = await adapter.promotions()
        clock.advance(1.0)
        served_again = await adapter.promotions()

    assert served is good
    assert served_again is good
    assert [record.getMessage() for record in caplog.records if complaint in record.getMessage()]
    assert len(caplog.records) == 1  # the same bad file is not parsed and reported again
    assert adapter.parses == 2

    write_systems(truth, feed.parent, ["promotions"])
    clock.advance(1.0)
    assert await adapter.promotions() == good


@pytest.mark.parametrize("case", MALFORMED)
async def test_a_malformed_feed_with_no_good_set_before_is_unavailable(
    feed: Path, truth: DemoEstate, case: str
) -> None:
    file, content, complaint = MALFORMED[case]
    replace_file(feed, file, content(truth))

    with pytest.raises(BackendUnavailable) as raised:
        await CsvPromotions(feed).promotions()

    assert raised.value.backend == "promotions"
    assert complaint in raised.value.detail


async def test_a_missing_folder_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable) as raised:
        await CsvPromotions(tmp_path / "not-mounted").promotions()

    assert raised.value.backend == "promotions"
    assert isinstance(raised.value.__cause__, FileNotFoundError)


async def test_an_empty_folder_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable) as raised:
        await CsvPromotions(tmp_path).promotions()

    assert "promotions.csv: file is missing" in raised.value.detail


async def test_a_feed_of_headers_only_is_an_empty_set(feed: Path) -> None:
    publish_feed(feed, [])

    found = await CsvPromotions(feed).promotions()

    assert (found.rules, found.coupons) == ((), ())


async def test_a_folder_that_disappears_is_unavailable_at_the_next_check(
    feed: Path, truth: DemoEstate, clock: FakeClock
) -> None:
    adapter = CsvPromotions(feed, check_interval=2.0, clock=clock)
    good = await adapter.promotions()

    shutil.rmtree(feed)
    clock.advance(1.0)
    within_interval = await adapter.promotions()
    clock.advance(1.0)
    with pytest.raises(BackendUnavailable):
        await adapter.promotions()
    write_systems(truth, feed.parent, ["promotions"])
    clock.advance(2.0)
    restored: PromotionSet = await adapter.promotions()

    assert within_interval is good
    assert restored == good
