"""`ray job submit --runtime-env jobs/runtime_env.yaml -- python jobs/probe.py --grid smoke --out s3://bucket/x`

Thin entry point: the flags of `vgrad probe`, run against the cluster the job runs on.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the working dir

from vgrad.cli import job_main  # noqa: E402

sys.exit(job_main("probe"))
