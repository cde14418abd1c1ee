"""The story of issue 11 through the generated Python bindings, against a real `sellsync hub`:
two devices enrol, edit the same deal offline, both see the value conflict (base, mine, theirs,
who, when), one resolves, the other's listener fires and it sees the resolution; typed errors
(validation, StoreLocked, Auth after a revoke, Closed); a listener that raises does not break
the device."""

import asyncio
import datetime
import threading

import pytest

import sellsync
from sellsync import FieldInput, Resolution, SellsyncError

ROUND = 30  # seconds, the bound of each sync round


def sync(device):
    return asyncio.run(device.sync_hub(ROUND))


def enrol(hub, tmp_path, user, name):
    cfg = sellsync.DeviceConfig(
        store_path=str(tmp_path / f"{name}.redb"), cache_bytes=None, low_memory=True
    )
    e = sellsync.Enrolment(hub_url=hub.url, token=hub.token(user, name), ca_pem=None)
    return sellsync.Device.enrol(cfg, e), cfg


class Recorder(sellsync.ChangeListener):
    """Keeps every batch of changed record ids it is told of."""

    def __init__(self):
        self.batches = []
        self.told = threading.Event()

    def on_change(self, records):
        self.batches.append(list(records))
        self.told.set()

    def seen(self):
        return {r for b in self.batches for r in b}


class Raises(sellsync.ChangeListener):
    def __init__(self):
        self.calls = 0

    def on_change(self, records):
        self.calls += 1
        raise RuntimeError("the app's listener failed")


def value_conflict(device, deal):
    [rec] = device.conflicts()
    assert rec.record == deal
    assert rec.kind == sellsync.RecordKind.DEAL
    fields = [c for c in rec.conflicts if c.is_field() and c.field == "value"]
    assert len(fields) == 1, rec.conflicts
    return fields[0]


def field(view, name):
    return next((f.value for f in view.fields if f.name == name), None)


def test_two_devices_conflict_resolve_and_observe(hub, tmp_path):
    rita, rita_cfg = enrol(hub, tmp_path, 2, "rita-phone")
    carl, _ = enrol(hub, tmp_path, 3, "carl-laptop")
    assert (rita.id(), rita.user()) == ("rita-phone", 2)

    sync(rita)  # brings the catalog
    deal = rita.create_deal([
        FieldInput(name="name", value="Fair lead"),
        FieldInput(name="value", value="1000"),
        FieldInput(name="currency", value="EUR"),
        FieldInput(name="stage_id", value="12"),
    ])
    assert rita.status().pending_changes == 1
    report = sync(rita)
    assert report.peer == "hub"
    assert rita.status().pending_changes == 0
    assert rita.status().last_hub_sync_ms is not None
    report = sync(carl)
    assert deal in report.changed
    [summary] = carl.deals()
    assert (summary.id, summary.name, summary.owner, summary.stage) == (deal, "Fair lead", 2, 12)
    assert (summary.value.kind, summary.value.text) == (sellsync.ValueKind.MONEY, "1000.00")

    # Offline: both edit the value; Rita adds a note, Carl a tag.
    note = rita.note(deal, "Met at the fair")
    rita.set(deal, [FieldInput(name="value", value="2000")])
    carl_told = Recorder()
    carl.observe(carl_told)
    carl.set(deal, [FieldInput(name="value", value="3000.50")])
    carl.tag(deal, "vip")
    assert carl_told.seen() == {deal}, "local edits are told"

    sync(rita)
    sync(carl)
    sync(rita)

    for who, device in (("rita", rita), ("carl", carl)):
        c = value_conflict(device, deal)
        assert c.base is not None, who
        assert (c.base.kind, c.base.text) == (sellsync.ValueKind.MONEY, "1000.00"), who
        got = sorted((x.by, x.device, x.value.text) for x in c.candidates)
        assert got == [(2, "rita-phone", "2000.00"), (3, "carl-laptop", "3000.50")], who
        for x in c.candidates:
            assert x.at_ms > 0 and x.op, who
            when = datetime.datetime.fromisoformat(x.at_iso.replace("Z", "+00:00"))
            assert abs(when.timestamp() * 1000 - x.at_ms) < 1, who
        assert device.status().open_conflicts == 1, who
        [s] = device.deals()
        assert s.open_conflicts == 1 and s.value is None, who
        view = device.record(deal)
        assert "vip" in view.tags, who
        assert any(a.id == note and a.content == "Met at the fair" for a in view.activities), who
        assert field(view, "value") is None, f"{who}: the value is in conflict"
        assert any(v.is_field() and v.base is not None for v in view.conflicts), who

    # Rita's "mine" is 2000, Carl's is 3000.50: each device's own view.
    mine = [x for x in value_conflict(rita, deal).candidates if x.device == "rita-phone"]
    assert mine[0].value.text == "2000.00"

    # An edit of the field in conflict is refused, typed.
    with pytest.raises(SellsyncError.InConflict) as e:
        carl.set(deal, [FieldInput(name="value", value="1")])
    assert e.value.field == "value"

    # Rita keeps hers; Carl's listener fires when the resolution arrives.
    rita.resolve_field(deal, "value", Resolution.MINE())
    assert rita.conflicts() == []
    with pytest.raises(SellsyncError.NoConflict):
        rita.resolve_field(deal, "value", Resolution.MINE())
    sync(rita)
    carl_told.batches.clear()
    carl_told.told.clear()
    report = sync(carl)
    assert deal in report.changed
    assert carl_told.told.wait(5), "carl's listener is told of the resolved deal"
    assert deal in carl_told.seen()
    view = carl.record(deal)
    assert view.conflicts == []
    assert field(view, "value").text == "2000.00"
    assert view.currency == "EUR"
    assert carl.status().open_conflicts == 0
    assert any(a.field == "value" and a.by == 2 and a.chosen.text == "2000.00"
               for a in carl.audit(deal))

    # A bad value raises the typed validation exception and writes nothing.
    for bad in ("12.345", "lots", "-"):
        with pytest.raises(SellsyncError.Invalid) as e:
            carl.set(deal, [FieldInput(name="value", value=bad)])
        assert e.value.field == "value", bad
        assert e.value.reason
    with pytest.raises(SellsyncError.Invalid) as e:
        carl.set(deal, [FieldInput(name="currency", value="EURO")])
    assert e.value.field == "currency"
    with pytest.raises(SellsyncError.Invalid) as e:
        carl.record("not an id")
    assert e.value.field == "id"
    with pytest.raises(SellsyncError.NoSuchRecord):
        carl.record("deal-unknown")
    with pytest.raises(SellsyncError.Invalid) as e:
        asyncio.run(carl.sync_hub(0))
    assert e.value.field == "timeout_secs"
    assert field(carl.record(deal), "value").text == "2000.00"

    # A second open of the same store raises StoreLocked.
    with pytest.raises(SellsyncError.StoreLocked):
        sellsync.Device.open(rita_cfg)
    # close() releases it; the closed object raises Closed.
    rita.close()
    with pytest.raises(SellsyncError.Closed):
        rita.deals()
    rita = sellsync.Device.open(rita_cfg)
    assert rita.deals()[0].id == deal

    # A revoked device raises the auth exception.
    hub.revoke("carl-laptop")
    with pytest.raises(SellsyncError.Auth) as e:
        sync(carl)
    assert e.value.reason
    # ... and still works offline.
    carl.tag(deal, "after-revoke")
    assert "after-revoke" in carl.record(deal).tags


def test_a_listener_that_raises_does_not_break_the_device(hub, tmp_path):
    rita, _ = enrol(hub, tmp_path, 2, "rita-phone")
    sync(rita)
    bad = Raises()
    rita.observe(bad)
    good = Recorder()
    rita.observe(good)
    deal = rita.create_deal([FieldInput(name="name", value="Lead")])
    rita.tag(deal, "vip")
    rita.set(deal, [FieldInput(name="value", value="10")])
    assert bad.calls == 3, "the raising listener was called each time"
    assert good.batches == [[deal], [deal], [deal]], "the others are still told"
    view = rita.record(deal)
    assert view.tags == ["vip"]
    assert field(view, "value").text == "10.00"
    # A sync round after it: the listener raises on a Rust worker thread; the round is fine.
    report = sync(rita)
    assert report.peer == "hub"
    assert rita.status().pending_changes == 0
