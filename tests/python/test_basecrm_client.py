"""The official client `basecrm==1.2.9`, unchanged, against `sellsync sim`."""

import decimal
import uuid

import basecrm
import pytest


def test_paging_through_deals_and_contacts(client):
    seen = []
    for page in range(1, 20):
        deals = client.deals.list(page=page, per_page=20)
        if not deals:
            break
        seen.extend(d.id for d in deals)
        assert all(isinstance(d.value, decimal.Decimal) for d in deals)
    assert len(seen) == 50 and len(set(seen)) == 50
    contacts = []
    for page in range(1, 20):
        chunk = client.contacts.list(page=page, per_page=100)
        if not chunk:
            break
        contacts.extend(chunk)
    assert len(contacts) >= 40
    newest = client.deals.list(sort_by="updated_at:desc", per_page=5)
    stamps = [d.updated_at for d in newest]
    assert stamps == sorted(stamps, reverse=True)
    some = client.deals.list(ids=[seen[0], seen[1]])
    assert sorted(d.id for d in some) == sorted(seen[:2])


def test_create_update_delete_deal(client):
    deal = client.deals.create(name="Python deal", value=decimal.Decimal("12.5"), tags=["py"],
                               custom_fields={"Region": "East"})
    assert deal.value == decimal.Decimal("12.50")
    assert deal.tags == ["py"]
    updated = client.deals.update(deal.id, {"value": decimal.Decimal("1000"), "tags": ["a", "b"],
                                            "custom_fields": {"Seats": "4"}})
    assert updated.value == decimal.Decimal("1000")
    assert updated.name == "Python deal"
    assert updated.tags == ["a", "b"]
    assert updated.custom_fields == {"Region": "East", "Seats": "4"}
    assert updated.updated_at > deal.updated_at
    assert client.deals.retrieve(deal.id).id == deal.id
    assert client.deals.destroy(deal.id) is True
    with pytest.raises(basecrm.RequestError) as err:
        client.deals.retrieve(deal.id)
    assert err.value.http_status == 404
    assert err.value.logref


def test_create_update_delete_contact(client):
    contact = client.contacts.create(first_name="Ann", last_name="Lee", email="ann@example.invalid",
                                     address={"city": "Oslo"})
    assert contact.address.city == "Oslo"
    contact = client.contacts.update(contact.id, {"title": "CTO"})
    assert contact.title == "CTO" and contact.last_name == "Lee"
    assert client.contacts.destroy(contact.id) is True


def test_create_update_delete_note_and_task(client):
    deal = client.deals.list(per_page=1)[0]
    note = client.notes.create(content="hello", resource_type="deal", resource_id=deal.id)
    note = client.notes.update(note.id, {"content": "hello again"})
    assert note.content == "hello again"
    assert client.notes.destroy(note.id) is True
    task = client.tasks.create(content="follow up", resource_type="deal", resource_id=deal.id,
                               due_date="2030-01-01T10:00:00Z")
    task = client.tasks.update(task.id, {"completed": True})
    assert task.completed is True and task.completed_at
    assert client.tasks.destroy(task.id) is True


def test_unprocessable_raises_resource_error_naming_the_field(client):
    deal = client.deals.list(per_page=1)[0]
    with pytest.raises(basecrm.ResourceError) as err:
        client.deals.update(deal.id, {"stage_id": 999999})
    assert err.value.http_status == 422
    assert err.value.logref
    assert [e.field for e in err.value.errors] == ["/data/stage_id"]
    assert err.value.errors[0].code == "incorrect_value"
    with pytest.raises(basecrm.ResourceError) as err:
        client.deals.create(name="")
    assert err.value.errors[0].field == "/data/name"
    with pytest.raises(basecrm.ResourceError) as err:
        client.contacts.create(first_name="No last name")
    assert err.value.errors[0].field == "/data/last_name"


def test_bad_token_is_401(sim):
    bad = sim.client(token="z" * 64)
    with pytest.raises(basecrm.RequestError) as err:
        bad.users.self()
    assert err.value.http_status == 401
    assert err.value.errors[0].code == "unauthorized"


def test_rate_limit_raises_rate_limit_error(start_sim):
    limited = start_sim("--data", "demo", "--rate-limit", "3")
    c = limited.client()
    for _ in range(3):
        c.users.self()
    with pytest.raises(basecrm.RateLimitError):
        c.users.self()
    limited.client("Bea Berg").users.self()


def test_sync_drains_acks_and_redelivers_unacked_items(start_sim):
    s = start_sim("--data", "demo", "--sync-page-size", "40")
    c = s.client()
    device = str(uuid.uuid4())
    seen = []

    def ack_all_but_notes(meta, data):
        seen.append((meta.type, data.id, meta.sync.event_type))
        return basecrm.Sync.NACK if meta.type == "note" else basecrm.Sync.ACK

    basecrm.Sync(c, device).fetch(ack_all_but_notes)
    assert sum(1 for t, _, _ in seen if t == "deal") == 50
    notes = {i for t, i, _ in seen if t == "note"}
    assert notes and all(e == "created" for _, _, e in seen)

    again = []
    basecrm.Sync(c, device).fetch(lambda meta, data: again.append((meta.type, data.id)) or basecrm.Sync.ACK)
    assert {i for _, i in again} == notes and {t for t, _ in again} == {"note"}

    nothing = []
    basecrm.Sync(c, device).fetch(lambda meta, data: nothing.append(data.id) or basecrm.Sync.ACK)
    assert nothing == []
    assert c.sync.start(device) is None

    deal = c.deals.list(per_page=1)[0]
    c.deals.update(deal.id, {"hot": not deal.hot})
    changed = []
    basecrm.Sync(c, device).fetch(lambda meta, data: changed.append((meta.type, data.id, meta.sync.event_type)) or basecrm.Sync.ACK)
    assert changed == [("deal", deal.id, "updated")]
