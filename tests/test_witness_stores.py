"""The witnesses' storage: a directory, and S3 under Object Lock (a local moto server)."""

import datetime
import os
import random
import stat
import tempfile
import threading
import uuid

import pytest

from projections.witness_stores import (
    Contradiction,
    DirectoryStore,
    ObjectLockMissing,
    S3Store,
    StoreUnavailable,
    parse_s3_url,
)
from tests.helpers import LEAKS
from tests.s3_server import S3, s3_endpoint_fixture, s3_fixture  # noqa: F401
from tests.server import free_port


def a_note(size: int) -> bytes:
    root = uuid.uuid4().hex
    return f"ops.example/pm-ops\n{size}\n{root}=\n\n— ops.example/pm-ops {root}\n".encode()


def some_sizes(count: int) -> list[int]:
    return random.sample(range(1, 10**9), count)


@pytest.fixture(params=["directory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path):
    if request.param == "directory":
        return DirectoryStore(tmp_path)
    local: S3 = request.getfixturevalue("s3")
    return S3Store(local.bucket, f"pm-ops/{uuid.uuid4().hex[:8]}", endpoint_url=local.endpoint_url)


def test_an_empty_store_holds_nothing(store):
    assert store.sizes() == []
    assert store.latest() is None
    assert store.get(random.randrange(10**6)) is None


def test_notes_are_kept_listed_in_order_and_the_largest_is_the_latest(store):
    sizes = some_sizes(5)
    notes = {size: a_note(size) for size in sizes}
    for size in sizes:  # not in order
        store.put(size, notes[size])
    assert store.sizes() == sorted(sizes)
    assert all(store.get(size) == notes[size] for size in sizes)
    assert store.latest() == (max(sizes), notes[max(sizes)])
    assert store.get(max(sizes) + 1) is None


def test_the_same_note_again_is_a_quiet_retry(store):
    size = random.randrange(1, 10**6)
    note = a_note(size)
    store.put(size, note)
    store.put(size, note)
    assert store.sizes() == [size]
    assert store.get(size) == note


def test_another_note_for_a_size_held_is_a_contradiction_and_the_first_stays(store):
    size = random.randrange(1, 10**6)
    first, second = a_note(size), a_note(size)
    store.put(size, first)
    with pytest.raises(Contradiction) as refused:
        store.put(size, second)
    assert (refused.value.size, refused.value.held, refused.value.offered) == (size, first, second)
    assert (
        str(refused.value) == f"checkpoint {size} is already held with different content: refused"
    )
    assert store.get(size) == first


def test_extras_are_kept_beside_a_note_under_the_same_rule(store):
    size = random.randrange(1, 10**6)
    store.put(size, a_note(size))
    token = os.urandom(64)
    store.put_extra(size, "tsr.0", token)
    store.put_extra(size, "tsr.0", token)
    with pytest.raises(Contradiction) as refused:
        store.put_extra(size, "tsr.0", os.urandom(64))
    assert refused.value.suffix == "tsr.0"
    assert "the tsr.0 of checkpoint" in str(refused.value)
    assert store.get_extra(size, "tsr.0") == token
    assert store.get_extra(size, "tsr.1") is None
    assert store.sizes() == [size]


@pytest.mark.parametrize("suffix", ["note", "", "../x", "a/b", ".hidden"])
def test_an_extra_cannot_be_named_like_a_note_or_a_path(store, suffix):
    with pytest.raises(ValueError, match="cannot name a file kept beside a checkpoint"):
        store.put_extra(1, suffix, b"x")


@pytest.mark.parametrize("size", [-1, True, 1.5, "3"])
def test_a_size_is_a_whole_number(store, size):
    with pytest.raises(ValueError, match="a tree size is a whole number"):
        store.put(size, b"x\n")


def test_files_that_are_not_size_dot_note_are_ignored(tmp_path):
    size = random.randrange(1, 10**6)
    store = DirectoryStore(tmp_path)
    store.put(size, a_note(size))
    for garbage in ("notes.txt", "007.note", "12.note.bak", ".5.note.abc", "x.note", "9.NOTE"):
        (tmp_path / garbage).write_bytes(b"not a checkpoint")
    (tmp_path / "sub").mkdir()
    assert store.sizes() == [size]
    assert store.latest() == (size, store.get(size))


def test_objects_that_are_not_size_dot_note_under_the_prefix_are_ignored(s3):
    store = S3Store(s3.bucket, "pm-ops", endpoint_url=s3.endpoint_url)
    size = random.randrange(1, 10**6)
    store.put(size, a_note(size))
    for garbage in (
        "pm-ops/notes.txt",
        "pm-ops/007.note",
        "pm-ops/sub/3.note",
        "pm-ops-old/4.note",
    ):
        s3.client.put_object(Bucket=s3.bucket, Key=garbage, Body=b"not a checkpoint")
    assert store.sizes() == [size]
    assert f"pm-ops/{size}.note" in keys(s3)


def keys(s3: S3, bucket: str | None = None) -> list[str]:
    answer = s3.client.list_objects_v2(Bucket=bucket or s3.bucket)
    return [item["Key"] for item in answer.get("Contents", [])]


def test_no_temporary_file_is_left_behind_and_notes_are_read_only(tmp_path):
    store = DirectoryStore(tmp_path)
    sizes = some_sizes(3)
    for size in sizes:
        note = a_note(size)
        store.put(size, note)
        store.put(size, note)
        with pytest.raises(Contradiction):
            store.put(size, a_note(size))
    store.put_extra(sizes[0], "tsr.0", b"token")
    expected = {f"{size}.note" for size in sizes} | {f"{sizes[0]}.tsr.0"}
    assert set(os.listdir(tmp_path)) == expected
    assert all(stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o444 for name in expected)


def test_two_writers_of_one_size_one_wins_and_the_other_agrees_or_objects(tmp_path):
    size = random.randrange(1, 10**6)
    note, other = a_note(size), a_note(size)
    assert race(tmp_path, size, [note, note]) == ["kept", "kept"]
    assert DirectoryStore(tmp_path).get(size) == note

    outcomes = race(tmp_path, size + 1, [note, other])
    kept = DirectoryStore(tmp_path).get(size + 1)
    assert kept in (note, other)
    assert outcomes.count("kept") == 1
    (refused,) = [outcome for outcome in outcomes if isinstance(outcome, Contradiction)]
    assert refused.held == kept != refused.offered
    assert sorted(os.listdir(tmp_path)) == sorted([f"{size}.note", f"{size + 1}.note"])


def race(path, size: int, notes: list[bytes]) -> list[object]:
    """Each note put by its own store in its own thread, all at once."""
    outcomes: list[object] = []
    start = threading.Barrier(len(notes))

    def write(note: bytes) -> None:
        store = DirectoryStore(path)
        start.wait()
        try:
            store.put(size, note)
            outcomes.append("kept")
        except Contradiction as refused:
            outcomes.append(refused)

    threads = [threading.Thread(target=write, args=(note,)) for note in notes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_a_missing_directory_is_unavailable_and_not_made(tmp_path):
    missing = tmp_path / "mount" / "checkpoints"
    store = DirectoryStore(missing)
    for attempt in (lambda: store.put(1, b"x\n"), store.sizes, lambda: store.get(1)):
        with pytest.raises(StoreUnavailable) as unavailable:
            attempt()
        assert str(unavailable.value) == (
            f"the checkpoint store {missing} is unavailable: there is no such directory"
        )
    assert not missing.exists()


def test_a_file_where_the_directory_should_be_is_unavailable(tmp_path):
    (tmp_path / "checkpoints").write_text("a file")
    for attempt in (lambda store: store.put(1, b"x\n"), DirectoryStore.sizes):
        with pytest.raises(StoreUnavailable, match="is unavailable: it is not a directory$"):
            attempt(DirectoryStore(tmp_path / "checkpoints"))


def test_an_unwritable_directory_is_unavailable_with_a_sentence():
    with tempfile.TemporaryDirectory() as parent:
        os.chmod(parent, 0o755)  # noqa: S103 (nobody must be able to enter it, not write)
        path = os.path.join(parent, "checkpoints")
        os.mkdir(path, 0o555)
        message = as_unprivileged(lambda: put_and_describe(path))
        assert message == (
            f"StoreUnavailable: the checkpoint store {path} is unavailable: "
            "writing 7.note failed: Permission denied"
        )
        assert os.listdir(path) == []


def put_and_describe(path: str) -> str:
    try:
        DirectoryStore(path).put(7, b"x\n")
    except StoreUnavailable as unavailable:
        return f"StoreUnavailable: {unavailable}"
    return "kept"


def as_unprivileged(run) -> str:
    """Root writes anywhere: as root, the call runs in a child that became nobody."""
    if os.geteuid() != 0:
        return run()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child reports through the pipe)
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, run().encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        said = answer.read().decode()
    os.waitpid(child, 0)
    return said


def test_s3_objects_are_under_compliance_retention_until_the_right_date(s3):
    days = random.randrange(1, 4000)
    store = S3Store(s3.bucket, "pm-ops", endpoint_url=s3.endpoint_url, retention_days=days)
    size = random.randrange(1, 10**6)
    before = datetime.datetime.now(datetime.UTC)
    store.put(size, a_note(size))
    store.put_extra(size, "tsr.0", b"token")
    after = datetime.datetime.now(datetime.UTC)
    for key in (f"pm-ops/{size}.note", f"pm-ops/{size}.tsr.0"):
        head = s3.client.head_object(Bucket=s3.bucket, Key=key)
        assert head["ObjectLockMode"] == "COMPLIANCE"
        until = head["ObjectLockRetainUntilDate"]
        second = datetime.timedelta(seconds=1)
        assert before + datetime.timedelta(days=days) - second <= until
        assert until <= after + datetime.timedelta(days=days) + second


def test_a_locked_s3_note_cannot_be_deleted_and_is_never_replaced(s3):
    store = S3Store(s3.bucket, "", endpoint_url=s3.endpoint_url)
    size = random.randrange(1, 10**6)
    note = a_note(size)
    store.put(size, note)
    with pytest.raises(Contradiction):
        store.put(size, a_note(size))
    versions = s3.client.list_object_versions(Bucket=s3.bucket)["Versions"]
    assert [v["Key"] for v in versions] == [f"{size}.note"]
    refused = s3.client.delete_objects(
        Bucket=s3.bucket,
        Delete={"Objects": [{"Key": f"{size}.note", "VersionId": versions[0]["VersionId"]}]},
    )
    assert [e["Code"] for e in refused["Errors"]] == ["AccessDenied"]
    assert store.get(size) == note


def test_a_bucket_without_object_lock_is_refused_with_a_sentence(s3):
    plain = s3.make_bucket(object_lock=False)
    store = S3Store(plain, "pm-ops", endpoint_url=s3.endpoint_url)
    with pytest.raises(ObjectLockMissing) as refused:
        store.put(1, a_note(1))
    assert str(refused.value) == (
        f"the checkpoint store s3://{plain}/pm-ops is unavailable: the bucket {plain} does not "
        "have S3 Object Lock enabled, so a checkpoint put there could be deleted or replaced; "
        "enable Object Lock on it"
    )
    assert isinstance(refused.value, StoreUnavailable)
    assert keys(s3, plain) == []


def test_a_missing_bucket_is_unavailable(s3):
    store = S3Store(f"no-such-{uuid.uuid4().hex[:12]}", "p", endpoint_url=s3.endpoint_url)
    with pytest.raises(StoreUnavailable, match="the bucket does not exist$"):
        store.put(1, a_note(1))
    with pytest.raises(StoreUnavailable, match="listing it failed: the bucket does not exist$"):
        store.sizes()


def test_an_unreachable_endpoint_is_unavailable_without_credentials_in_the_message(s3, monkeypatch):
    secret = uuid.uuid4().hex
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    port = free_port()
    store = S3Store("checkpoints", "pm-ops", endpoint_url=f"http://127.0.0.1:{port}")
    for attempt in (lambda: store.put(1, a_note(1)), store.sizes, store.latest):
        with pytest.raises(StoreUnavailable) as unavailable:
            attempt()
        message = str(unavailable.value)
        assert message.startswith("the checkpoint store s3://checkpoints/pm-ops is unavailable: ")
        assert message.endswith(
            f"failed: the S3 endpoint http://127.0.0.1:{port} could not be reached"
        )
        assert "\n" not in message
        assert secret not in message and "testing" not in message
        assert not any(leak in message for leak in LEAKS)


def test_no_credentials_is_unavailable_with_a_sentence(s3, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = S3Store(s3.bucket, "pm-ops", endpoint_url=s3.endpoint_url)
    with pytest.raises(StoreUnavailable, match="no AWS credentials were found"):
        store.put(1, a_note(1))


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("s3://ckpt/pm-ops", ("ckpt", "pm-ops")),
        ("s3://ckpt/a/b/", ("ckpt", "a/b")),
        ("s3://ckpt", ("ckpt", "")),
    ],
)
def test_an_s3_url_names_a_bucket_and_a_prefix(url, parsed):
    assert parse_s3_url(url) == parsed


@pytest.mark.parametrize(
    "url", ["https://ckpt/pm-ops", "s3:///pm-ops", "ckpt/pm-ops", "s3://b/p?x=1"]
)
def test_a_url_that_is_not_s3_is_refused_with_a_sentence(url):
    with pytest.raises(ValueError, match=r"is not an S3 location like s3://bucket/prefix$"):
        parse_s3_url(url)


@pytest.mark.parametrize(
    ("options", "refusal"),
    [
        ({"retention_days": 0}, "the retention must be at least one day, not 0"),
        ({"retention_days": "7"}, "the retention is a whole number of days, not '7'"),
        (
            {"endpoint_url": "127.0.0.1:9000"},
            "the S3 endpoint '127.0.0.1:9000' is not an http(s) URL",
        ),
    ],
)
def test_an_s3_store_refuses_settings_it_cannot_use(options, refusal):
    with pytest.raises(ValueError) as refused:
        S3Store("checkpoints", "pm-ops", **options)
    assert str(refused.value) == refusal
