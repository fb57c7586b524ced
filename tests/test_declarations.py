"""An operation is declared once (commands/operations.py): what its event means to each
read model and feed follows from the declaration, and a reader that does not say what
it does with an event the domain stores refuses to start, naming the event."""

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from aggregates import Delivery, Person, domain_events
from api.cli import call, cli
from api.client import TYPED
from commands.operations import BY_NAME, OPERATIONS
from projections import activity, audit, customerio, slack, state
from projections.handled import Unhandled, check_handled, require_attributes

ROOT = Path(__file__).resolve().parent.parent
# What names an operation or one of its events, as the project's before-stop check reads it.
OPERATION_WORDS = re.compile(
    r"add-member|set-code|ADD_MEMBER|SET_CODE|communityMembership|personSignupCode|"
    r"MemberAdded|SignupCodeChanged|add_member|set_signup_code|set_code|community_joined|"
    r"signup_code_changed"
)
READERS = {
    "state": (state.MEANINGS, state.LEAVES_ALONE),
    "audit": ({**audit.ENTRIES, **audit.SUBJECTS}, audit.LEAVES_ALONE),
    "activity": (activity.MEANINGS, activity.LEAVES_ALONE),
    "customerio": (customerio.ANNOUNCED, customerio.LEAVES_ALONE),
    "slack": (slack.FEED_EVENTS, slack.LEAVES_ALONE),
}


def test_every_reader_says_what_it_does_with_every_event_the_domain_stores():
    for check in (state.check, audit.check, activity.check, customerio.check):
        check()  # what start-up runs
    for reader, (handled, ignored) in READERS.items():
        check_handled(reader, handled, ignored)


@pytest.mark.parametrize("reader", READERS)
def test_a_reader_that_forgets_an_event_refuses_to_start_and_names_it(reader):
    handled, ignored = READERS[reader]
    for event in handled:
        with pytest.raises(Unhandled) as refused:
            check_handled(reader, set(handled) - {event}, ignored)
        assert event.__qualname__ in str(refused.value)
        assert f"the {reader} read model" in str(refused.value)


def test_operation_events_are_read_only_through_their_declaration():
    for op in OPERATIONS:
        assert op.event in domain_events()
        assert state.MEANINGS[op.event] is not None
        assert audit.WORDS[op.name] == op.audit.words
    with pytest.raises(Unhandled, match="Person.MemberAdded.no_such"):
        require_attributes("audit", Person.MemberAdded, ("community_id", "no_such"))
    assert Delivery.Recorded not in customerio.ANNOUNCED, "calls are not Customer.io's changes"


def test_an_operation_is_named_by_at_most_six_production_files():
    naming = sorted(
        str(path.relative_to(ROOT))
        for layer in ("aggregates", "commands", "projections", "api")
        for path in (ROOT / layer).rglob("*")
        if path.suffix in (".py", ".html", ".js") and OPERATION_WORDS.search(path.read_text())
    )
    assert len(naming) <= 6, naming


def test_every_declared_operation_has_a_typed_client_method_and_a_call_subcommand():
    assert set(TYPED) == set(BY_NAME)
    call.register(cli)
    listed = CliRunner().invoke(cli, ["call", "--help"]).stdout
    for op in OPERATIONS:
        assert op.name in listed
        help_text = CliRunner().invoke(cli, ["call", op.name, "--help"]).stdout
        assert f"--{op.field.option}" in help_text
        assert ("--clear" in help_text) == op.field.nullable
