from __future__ import annotations

from pathlib import Path

import pytest

from sqltune.errors import StorageError
from sqltune.storage import is_s3, join, local_path, parse_s3_uri


def test_parse_s3_uri():
    assert parse_s3_uri("s3://my-bucket/runs/run-1/") == ("my-bucket", "runs/run-1/")
    assert parse_s3_uri("s3://my.bucket.1") == ("my.bucket.1", "")
    assert parse_s3_uri("s3://abc/") == ("abc", "")


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("s3://", "bucket name is missing"),
        ("s3:///key", "bucket name is missing"),
        ("s3:/x/y", "two slashes"),
        ("s3:x", "two slashes"),
        ("S3://bucket/x", "lower-case"),
        ("s3://ab/x", "3 to 63 characters"),
        ("s3://" + "a" * 64, "3 to 63 characters"),
        ("s3://My_Bucket/x", "only lower-case letters"),
        ("s3://-bucket/x", "begin and end"),
        ("s3://192.168.1.1/x", "IP address"),
        ("s3://bucket/a b", "whitespace"),
        ("s3://bucket//x", "empty path segment"),
        ("gs://bucket/x", "not an S3 URI"),
    ],
)
def test_malformed_s3_uri_names_uri_and_fix(uri, why):
    with pytest.raises(StorageError, match=why) as info:
        parse_s3_uri(uri)
    msg = str(info.value)
    if uri.lower().startswith("s3:") or uri.startswith("gs:"):
        assert repr(uri) in msg
        assert "s3://BUCKET/PREFIX" in msg


def test_is_s3_and_join():
    assert is_s3("s3://b/x") and is_s3("s3:/typo") and not is_s3("/tmp/x") and not is_s3(Path("s3"))
    assert join("s3://bkt/a", "b/", "/c") == "s3://bkt/a/b/c"
    assert join("s3://bkt/a/", "manifest.json") == "s3://bkt/a/manifest.json"
    assert join("s3://bkt", "x") == "s3://bkt/x"
    assert join("/tmp/x", "y", "z") == "/tmp/x/y/z"
    assert join("file:///tmp/x/", "y") == "file:///tmp/x/y"
    with pytest.raises(StorageError, match="bucket"):
        join("s3://x/a", "b")


def test_local_paths():
    assert local_path("file:///tmp/a") == Path("/tmp/a")
    assert local_path("rel/dir") == Path("rel/dir")
    with pytest.raises(StorageError, match="must be absolute"):
        local_path("file://rel")
    with pytest.raises(StorageError, match="scheme 'gs' is not supported"):
        local_path("gs://bucket/x")
