"""`ray job submit --working-dir . -- python jobs/probe.py --grid smoke --out s3://bucket/x`

Thin entry point: the same flags as `vgrad probe`; connects to the cluster it runs on.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the working dir

from vgrad.cli import main  # noqa: E402

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--address" not in args:
        args += ["--address", "auto"]  # inside a Ray job: the job's own cluster
    sys.exit(main(["probe", *args]))
