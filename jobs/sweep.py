"""`ray job submit --runtime-env jobs/runtime_env.yaml -- python jobs/sweep.py --grid smoke --storage s3://bucket/x`

Thin entry point: the flags of `vgrad sweep`, run against the cluster the job runs on.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the working dir

from vgrad.cli import job_main  # noqa: E402

sys.exit(job_main("sweep"))
