"""The rest of the exported surface through the generated Python bindings, against a real
`sellsync hub`: `enrol_checked` (async), the catalog (stages, users, sources, custom fields by
name), the async change feed beside the listener, stopping a listener, the CRM-refusal calls
(what they answer when nothing was refused), and `serve_lan` with a LAN round and its stop."""

import asyncio
import time

import pytest

import sellsync
from sellsync import FieldInput, RecordKind, RefusalTarget, SellsyncError

ROUND = 30


def sync(device):
    return asyncio.run(device.sync_hub(ROUND))


def cfg(tmp_path, name):
    return sellsync.DeviceConfig(
        store_path=str(tmp_path / f"{name}.redb"), cache_bytes=None, low_memory=True
    )


def enrol(hub, tmp_path, user, name):
    e = sellsync.Enrolment(hub_url=hub.url, token=hub.token(user, name), ca_pem=None)
    return sellsync.Device.enrol(cfg(tmp_path, name), e)


class Recorder(sellsync.ChangeListener):
    def __init__(self):
        self.batches = []

    def on_change(self, records):
        self.batches.append(list(records))


def test_enrol_checked(hub, tmp_path):
    e = sellsync.Enrolment(hub_url=hub.url, token=hub.token(2, "rita-phone"), ca_pem=None)
    done = asyncio.run(sellsync.enrol_checked(cfg(tmp_path, "rita"), e, ROUND))
    assert done.first_round is not None and done.first_round.peer == "hub"
    assert done.device.catalog().loaded, "the checking round brought the catalog"
    assert done.device.status().last_hub_sync_ms is not None

    # A token the hub refuses: Auth, and the new store is gone again.
    token = hub.token(3, "carl-laptop")
    forged = token[:-4] + ("0000" if not token.endswith("0000") else "1111")
    bad = sellsync.Enrolment(hub_url=hub.url, token=forged, ca_pem=None)
    with pytest.raises(SellsyncError.Auth):
        asyncio.run(sellsync.enrol_checked(cfg(tmp_path, "carl"), bad, ROUND))
    with pytest.raises(SellsyncError.NotEnrolled):
        sellsync.Device.open(cfg(tmp_path, "carl"))

    # An unreachable hub leaves the device enrolled, unchecked.
    away = sellsync.Enrolment(hub_url="ws://127.0.0.1:1/", token=token, ca_pem=None)
    done = asyncio.run(sellsync.enrol_checked(cfg(tmp_path, "carl"), away, 5))
    assert done.first_round is None
    assert done.device.id() == "carl-laptop"

    with pytest.raises(SellsyncError.Invalid) as err:
        asyncio.run(sellsync.enrol_checked(cfg(tmp_path, "x"), e, 0))
    assert err.value.field == "timeout_secs"
    with pytest.raises(SellsyncError.BadEnrolment):
        asyncio.run(sellsync.enrol_checked(
            cfg(tmp_path, "y"), sellsync.Enrolment(hub_url="http://x/", token=token, ca_pem=None), 5))


def test_catalog(hub, tmp_path):
    rita = enrol(hub, tmp_path, 2, "rita-phone")
    empty = rita.catalog()
    assert not empty.loaded and empty.stages == [] and empty.users == []
    assert rita.custom_field(RecordKind.DEAL, "Region") is None
    sync(rita)
    c = rita.catalog()
    assert c.loaded
    assert [(u.id, u.name, u.role) for u in c.users] == [
        (1, "Ada Admin", "admin"), (2, "Rita Rep", "user"), (3, "Carl Colleague", "user")]
    assert 12 in [s.id for s in c.stages]
    assert all(s.pipeline_id in [p.id for p in c.pipelines] for s in c.stages)
    assert c.sources and c.loss_reasons
    assert [f.name for f in c.deal_fields] == ["Referral", "Region", "Seats"]
    assert c.contact_fields == []
    region = rita.custom_field(RecordKind.DEAL, "Region")
    assert region.kind == sellsync.CustomFieldKind.LIST
    assert region.choices == ["EMEA", "APAC", "Americas"]
    assert rita.custom_field(RecordKind.DEAL, "Seats").kind == sellsync.CustomFieldKind.NUMBER
    assert rita.custom_field(RecordKind.DEAL, "Nope") is None
    assert rita.custom_field(RecordKind.CONTACT, "Region") is None
    with pytest.raises(SellsyncError.Invalid) as e:
        rita.custom_field(RecordKind.DEAL, " ")
    assert e.value.field == "name"


def test_change_feed_and_stopping_a_listener(hub, tmp_path):
    rita = enrol(hub, tmp_path, 2, "rita-phone")
    carl = enrol(hub, tmp_path, 3, "carl-laptop")
    sync(rita)
    sync(carl)
    feed = rita.changes()
    started = time.monotonic()
    assert asyncio.run(feed.next_changes(200)) == [], "nothing changed: empty after the wait"
    assert time.monotonic() - started >= 0.15, "it waited"
    deal = rita.create_deal([FieldInput(name="name", value="Lead")])
    assert feed.try_next_changes() == [deal]
    assert feed.try_next_changes() == [], "each change once"
    rita.tag(deal, "vip")
    rita.note(deal, "hello")
    assert asyncio.run(feed.next_changes(5000)) == [deal], "two edits of one record: once"

    # A change by a sync round, waited for while the round runs.
    carl_feed = carl.changes()
    sync(rita)

    async def round_and_wait():
        waiting = asyncio.ensure_future(carl_feed.next_changes(20000))
        await carl.sync_hub(ROUND)
        return await asyncio.wait_for(waiting, 25)

    assert deal in asyncio.run(round_and_wait())

    with pytest.raises(SellsyncError.Invalid) as e:
        asyncio.run(feed.next_changes(0))
    assert e.value.field == "timeout_ms"

    # A listener stopped is not told again; the others are.
    stopped, kept = Recorder(), Recorder()
    registration = rita.observe(stopped)
    rita.observe(kept)
    assert registration.is_active()
    rita.tag(deal, "a")
    registration.stop()
    registration.stop()
    assert not registration.is_active()
    rita.tag(deal, "b")
    assert stopped.batches == [[deal]]
    assert kept.batches == [[deal], [deal]]


def test_refusal_calls_answer_no_conflict_when_nothing_was_refused(hub, tmp_path):
    rita = enrol(hub, tmp_path, 2, "rita-phone")
    sync(rita)
    deal = rita.create_deal([FieldInput(name="name", value="Lead")])
    with pytest.raises(SellsyncError.NoConflict):
        rita.fix_refused_value(deal, "value", "10")
    with pytest.raises(SellsyncError.NoConflict):
        rita.retry_refused(deal, RefusalTarget.RECORD())
    with pytest.raises(SellsyncError.NoConflict):
        rita.retry_refused(deal, RefusalTarget.FIELD(field="value"))
    note = rita.note(deal, "hello")
    with pytest.raises(SellsyncError.NoConflict):
        rita.fix_refused_note(deal, note, "better")
    with pytest.raises(SellsyncError.Invalid) as e:
        rita.fix_refused_value(deal, "value", "lots")
    assert e.value.field == "value"
    with pytest.raises(SellsyncError.Invalid) as e:
        rita.fix_refused_value(deal, "no such field!", "1")
    assert e.value.field == "no such field!", "a field the catalog does not know"
    with pytest.raises(SellsyncError.Invalid) as e:
        rita.fix_refused_note(deal, note, " ")
    assert e.value.field == "text"
    with pytest.raises(SellsyncError.Invalid) as e:
        rita.retry_refused(deal, RefusalTarget.ACTIVITY(id="not an id"))
    assert e.value.field == "activity"
    with pytest.raises(SellsyncError.Invalid) as e:
        rita.retry_refused("not an id", RefusalTarget.RECORD())
    assert e.value.field == "id"


def test_serve_lan(hub, tmp_path):
    rita = enrol(hub, tmp_path, 2, "rita-phone")
    carl = enrol(hub, tmp_path, 3, "carl-laptop")
    with pytest.raises(SellsyncError.Auth):
        asyncio.run(rita.serve_lan("127.0.0.1:0"))
    with pytest.raises(SellsyncError.Invalid) as e:
        asyncio.run(rita.serve_lan("localhost"))
    assert e.value.field == "address"
    sync(rita)
    sync(carl)
    deal = rita.create_deal([FieldInput(name="name", value="Offline lead")])
    server = asyncio.run(rita.serve_lan("127.0.0.1:0"))
    assert server.port() > 0
    assert server.url() == f"wss://127.0.0.1:{server.port()}/"
    with pytest.raises(SellsyncError.Unreachable):
        asyncio.run(carl.serve_lan(f"127.0.0.1:{server.port()}"))
    report = asyncio.run(carl.sync_peer(server.url(), "rita-phone", ROUND))
    assert deal in report.changed
    assert [d.id for d in carl.deals()] == [deal]
    asyncio.run(server.stop())
    asyncio.run(server.stop())
    with pytest.raises(SellsyncError.Unreachable):
        asyncio.run(carl.sync_peer(server.url(), "rita-phone", 5))
