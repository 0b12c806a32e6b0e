from __future__ import annotations

import os

import pytest

from sqltune.errors import NotFoundError, StorageError
from sqltune.storage import (
    clear_client_cache,
    delete_prefix,
    download_file,
    exists,
    join,
    list_files,
    parse_s3_uri,
    read_bytes,
    read_text,
    s3_client,
    upload_file,
    write_bytes,
    write_text,
)


def test_file_operations_on_both_backends(store, tmp_path):
    assert list_files(store) == []
    assert not exists(join(store, "a.txt"))
    write_text(join(store, "a.txt"), "héllo")
    write_bytes(join(store, "sub/dir/b.bin"), b"\x00\x01")
    src = tmp_path / "src.txt"
    src.write_text("uploaded")
    upload_file(src, join(store, "sub/c.txt"))
    # A sibling whose name extends the prefix must not be listed under it.
    write_bytes(store.rstrip("/") + "0/other.txt", b"x")

    assert read_text(join(store, "a.txt")) == "héllo"
    assert read_bytes(join(store, "sub/dir/b.bin")) == b"\x00\x01"
    assert exists(join(store, "a.txt")) and exists(join(store, "sub"))
    assert list_files(store) == ["a.txt", "sub/c.txt", "sub/dir/b.bin"]
    assert list_files(join(store, "sub")) == ["c.txt", "dir/b.bin"]

    out = download_file(join(store, "sub/c.txt"), tmp_path / "down" / "c.txt")
    assert out.read_text() == "uploaded"
    with pytest.raises(NotFoundError, match="a-missing.txt: check the URI"):
        read_bytes(join(store, "a-missing.txt"))
    with pytest.raises(FileNotFoundError):  # still one, for callers probing for a file
        download_file(join(store, "a-missing.txt"), tmp_path / "never")
    assert not (tmp_path / "never").exists()

    assert delete_prefix(join(store, "sub")) == 2
    assert list_files(store) == ["a.txt"]
    assert delete_prefix(store) == 1
    assert list_files(store) == []
    assert read_bytes(store.rstrip("/") + "0/other.txt") == b"x"


def test_multipart_upload_of_large_file(s3_prefix, tmp_path):
    big = tmp_path / "big.bin"
    data = os.urandom(20 * 1024 * 1024 + 123)
    big.write_bytes(data)
    uri = join(s3_prefix, "big.bin")
    upload_file(big, uri)
    bucket, key = parse_s3_uri(uri)
    head = s3_client().head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == len(data)
    assert "-" in head["ETag"], "expected a multipart ETag (md5-of-parts '-N')"
    back = download_file(uri, tmp_path / "back.bin")
    assert back.read_bytes() == data


def test_multipart_with_boto3_default_checksums(s3_server, s3_prefix, tmp_path):
    """A plain boto3 client (CRC checksums on by default in boto3 >= 1.36) also works with the server."""
    import boto3
    from boto3.s3.transfer import TransferConfig

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * 1024 * 1024))
    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    bucket, key = parse_s3_uri(join(s3_prefix, "plain.bin"))
    client.upload_file(str(big), bucket, key, Config=TransferConfig(multipart_threshold=8 * 1024 * 1024))
    assert read_bytes(join(s3_prefix, "plain.bin")) == big.read_bytes()


def test_unreachable_endpoint_fails_fast_naming_it(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("SQLTUNE_S3_MAX_ATTEMPTS", "2")
    clear_client_cache()
    sends: list[str] = []
    s3_client().meta.events.register("before-send.s3", lambda request, **_: sends.append(request.url))
    with pytest.raises(StorageError, match=r"cannot reach S3 endpoint http://127\.0\.0\.1:9 \(AWS_ENDPOINT_URL_S3\)"):
        read_bytes("s3://some-bucket/x.txt")
    # Fails fast: botocore's first try plus the configured retries, then the error (no loop of its own).
    assert set(sends) == {"http://127.0.0.1:9/some-bucket/x.txt"} and len(sends) <= 1 + 2, sends
    clear_client_cache()


def test_missing_bucket_is_named(s3_server):
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist"):
        write_bytes("s3://no-such-bucket-here/x", b"1")


def test_bad_endpoint_value(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "127.0.0.1:9000")
    with pytest.raises(StorageError, match=r"must start with http:// or https://"):
        read_bytes("s3://some-bucket/x.txt")


def test_refuses_to_delete_a_bucket_or_root():
    with pytest.raises(StorageError, match="whole bucket"):
        delete_prefix("s3://some-bucket/")
    with pytest.raises(StorageError, match="filesystem root"):
        delete_prefix("/")
