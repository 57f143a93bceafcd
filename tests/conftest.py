"""Shared fixtures: a real S3 (moto's server on loopback) and the env that points at it.

Nothing here mocks s3fs, pyarrow or Ray: the server speaks real HTTP, and the code under
test reaches it through the same botocore/aiobotocore stack it would use against AWS.
"""
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass

import pytest

CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
# Variables that could send a test to a real account or an unexpected endpoint.
AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
            "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION",
            "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
            "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clear_fs_caches() -> None:
    """fsspec caches filesystem instances by their kwargs, not by the environment: an
    instance built under one set of env credentials would be reused under another."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@dataclass
class S3Server:
    endpoint: str
    proc: subprocess.Popen

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"vgrad-test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture(scope="session")
def s3_server():
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in AWS_VARS} | CREDS
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=2).read()
            break
        except urllib.error.HTTPError:  # an HTTP answer of any status: it is up
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("moto server did not answer within 60 s")
            time.sleep(0.1)
    try:
        yield S3Server(endpoint, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        clear_fs_caches()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Point the AWS chain at the moto server; returns the full env for subprocesses."""
    for k in AWS_VARS:
        monkeypatch.delenv(k, raising=False)
    values = CREDS | {"AWS_ENDPOINT_URL": s3_server.endpoint}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    clear_fs_caches()
    yield dict(values)
    clear_fs_caches()


@pytest.fixture(autouse=True)
def _fresh_fs_cache():
    """No filesystem instance (and its credentials) survives from one test into the next."""
    yield
    if "s3fs" in sys.modules:
        clear_fs_caches()
