"""Where results go: a local folder or s3://, one whole file at a time (docs/schema.md).

Layout under the root URL (contract)::

    <root>/<sweep_id>/sweep.json
    <root>/<sweep_id>/trials/<trial_id>/trial.json
    <root>/<sweep_id>/layer_stats/trial_id=<id>/part-<first_step>.parquet
    <root>/<sweep_id>/train_metrics/trial_id=<id>/part-<first_step>.parquet

Names are deterministic, so a retry rewrites the same files.  A file is written whole:
locally a temp file then an atomic rename; on S3 one PUT (s3fs sends bodies under
100 MiB as a single put_object).  Credentials live only in the filesystem object:
``describe()`` and every message name the URL and endpoint, never a key.
"""
from __future__ import annotations

import io
import json
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

VALID_SCHEMES = ("a local path", "file://", "s3://")


class StoreError(RuntimeError):
    """The storage root cannot be used; the message says why and what would work."""


@dataclass(frozen=True)
class StorageOptions:
    """How to reach object storage.  Unset values come from the standard AWS chain
    (environment, ~/.aws, instance profile).  Pickled into Ray tasks; never printed."""

    endpoint_url: str | None = None
    key: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    region: str | None = None

    def for_s3fs(self) -> dict[str, Any]:
        # pyarrow's S3 filesystem ignores AWS_ENDPOINT_URL and older botocores do too,
        # so the endpoint is always passed explicitly.
        endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        opts: dict[str, Any] = {}
        if endpoint:
            opts["endpoint_url"] = endpoint
        if self.key or self.secret:
            opts.update(key=self.key, secret=self.secret)
        if self.region:
            opts["client_kwargs"] = {"region_name": self.region}
        return opts


class Store:
    def __init__(self, url: str, options: StorageOptions | None = None):
        self.options = options or StorageOptions()
        self.scheme = url.split("://", 1)[0] if "://" in url else "file"
        if self.scheme not in ("file", "s3"):
            raise StoreError(f"unsupported storage URL {url!r}: valid are {', '.join(VALID_SCHEMES)}")
        if self.scheme == "s3" and not url.split("://", 1)[1].strip("/"):
            raise StoreError(f"storage URL {url!r} names no bucket: use s3://BUCKET[/PREFIX]")
        self.url = url.rstrip("/")
        kwargs = self.options.for_s3fs() if self.scheme == "s3" else {}
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **kwargs)

    def describe(self) -> str:
        endpoint = self.options.for_s3fs().get("endpoint_url")
        return self.url + (f" (endpoint {endpoint})" if self.scheme == "s3" and endpoint else "")

    # -- fail fast ------------------------------------------------------------------------
    def check(self) -> None:
        """Write and delete a marker under the root: proves the bucket exists and the
        credentials can write, before any work is scheduled."""
        marker = self._path(f".vgrad-check-{uuid.uuid4().hex}")
        fs = self.fs
        if self.scheme == "s3":  # no retries with backoff here: a dead endpoint fails in seconds
            fs = fsspec.filesystem("s3", **self.options.for_s3fs(),
                                   config_kwargs={"retries": {"max_attempts": 1}, "connect_timeout": 5})
        try:
            if self.scheme == "s3":
                fs.pipe_file(marker, b"ok")
            else:
                self.write_bytes(marker, b"ok")
            fs.rm(marker)
        except Exception as e:  # botocore/aiohttp/OS errors: translate, name the cause
            raise StoreError(f"cannot write to {self.describe()}: {_explain(e)}") from None

    # -- paths ----------------------------------------------------------------------------
    def _path(self, rel: str) -> str:
        return f"{self.root.rstrip('/')}/{rel}"

    def url_of(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    @staticmethod
    def trial_json(sweep_id: str, trial_id: str) -> str:
        return f"{sweep_id}/trials/{trial_id}/trial.json"

    @staticmethod
    def part_name(table: str, sweep_id: str, trial_id: str, first_step: int) -> str:
        return f"{sweep_id}/{table}/trial_id={trial_id}/part-{first_step:09d}.parquet"

    # -- whole-file writes ------------------------------------------------------------------
    def write_bytes(self, path: str, data: bytes) -> None:
        if self.scheme == "file":
            folder, name = os.path.split(path)
            os.makedirs(folder, exist_ok=True)
            # A dot name: pyarrow/pandas skip it, so a writer killed mid-file leaves no
            # half file in a partition folder that readers would trip on.
            tmp = os.path.join(folder, f".{name}.tmp-{uuid.uuid4().hex}")
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)  # atomic: readers never see half a file
            except BaseException:
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise
        else:
            self.fs.pipe_file(path, data)  # one PUT below s3fs's multipart threshold

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(self._path(rel), (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())

    def read_json(self, rel: str) -> Any:
        return json.loads(self.fs.cat_file(self._path(rel)))

    def write_table(self, rel: str, table: pa.Table) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self.write_bytes(self._path(rel), buf.getvalue())

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self._path(rel))

    def ls(self, rel: str) -> list[str]:
        path = self._path(rel)
        return sorted(p.rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False)) if self.fs.exists(path) else []


def _explain(e: Exception) -> str:
    text = f"{type(e).__name__}: {e}"
    lowered = text.lower()
    if "nosuchbucket" in lowered or isinstance(e, FileNotFoundError):
        return f"the bucket does not exist ({text})"
    if "credentials" in lowered or "accessdenied" in lowered or "invalidaccesskeyid" in lowered \
            or "signature" in lowered or isinstance(e, PermissionError):
        return f"access denied: check AWS credentials / instance profile ({text})"
    if "connect" in lowered or "endpoint" in lowered:
        return f"cannot reach the endpoint ({text})"
    return text
