"""The typed views the CLI, `verify` and the auditors' web page read through, on both
stores: keyset pages that add up to the whole trail, and state queries."""

import uuid

from projections.audit import AuditFilters
from tests.conftest import new_id
from tests.test_projections import add_member, invoke, set_code


def test_audit_pages_by_position_and_add_up_to_the_whole_filtered_trail(
    config, services, client, directory
):
    tag = uuid.uuid4().hex[:6]
    for i in range(7):
        assert set_code(client, directory, directory.person_id, f"{tag}-{i}").status_code == 200
    assert add_member(client, directory, directory.person_id).status_code == 200
    assert invoke(config, "projections", "run", "--once").exit_code == 0
    audit = services.read_models.audit
    mine = AuditFilters(person=directory.person_id, operation="set-code")

    pages, after = [], None
    while page := audit.search(mine, after=after, limit=3):
        pages.append(page)
        after = page[-1].position
    assert [len(p) for p in pages] == [3, 3, 1]
    walked = [e for p in pages for e in p]
    assert walked == list(audit.entries(mine)) == list(audit.entries(mine, batch=2))
    assert [e.new_value for e in walked] == [f"{tag}-{i}" for i in range(7)]
    assert [e.previous_value for e in walked[1:]] == [e.new_value for e in walked[:-1]]

    by_email = audit.search(AuditFilters(email=f"  {directory.email.upper()} "), limit=100)
    assert {e.operation for e in by_email} == {"set-code", "add-member"}
    assert audit.search(AuditFilters(email=f"nobody.{tag}@example.com")) == []


def test_state_view_answers_people_members_and_names(config, services, client, directory):
    stranger = new_id()
    assert add_member(client, directory, directory.person_id).status_code == 200
    assert add_member(client, directory, directory.other_person_id).status_code == 200
    assert set_code(client, directory, directory.person_id, "VC-View").status_code == 200
    assert add_member(client, directory, stranger).status_code == 404
    assert invoke(config, "projections", "run", "--once", "--only", "state").exit_code == 0
    state = services.read_models.state

    person = state.person(directory.person_id)
    assert person is not None
    assert (person.email, person.signup_code) == (directory.email, "VC-View")
    assert person.communities == (directory.community_id,)
    assert state.person(stranger) is None
    members = state.members(directory.community_id)
    assert [m.person_id for m in members] == sorted(
        [directory.person_id, directory.other_person_id]
    )
    assert state.community_names()[directory.community_id] == "Founders Circle"
    snapshot = state.snapshot()
    assert snapshot.position == state.position() > 0
    assert (
        snapshot.person(directory.other_person_id)
        == members[[m.person_id for m in members].index(directory.other_person_id)]
    )
