"""Create the MLflow artifact bucket on an S3-compatible store (MinIO) if it does not exist yet.

Reads the endpoint from ``MLFLOW_S3_ENDPOINT_URL`` and credentials from the standard AWS variables;
run once before the MLflow server starts: ``python infra/mlflow/make_bucket.py activealign-mlflow``.
"""

from __future__ import annotations

import logging
import os
import sys

import boto3
from botocore.exceptions import ClientError

logger = logging.getLogger("make_bucket")


def ensure_bucket(name: str, endpoint_url: str) -> bool:
    """Create bucket ``name`` unless it exists; True when it was created."""
    s3 = boto3.client("s3", endpoint_url=endpoint_url)
    try:
        s3.head_bucket(Bucket=name)
        return False
    except ClientError:
        s3.create_bucket(Bucket=name)
        return True


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    bucket = sys.argv[1] if len(sys.argv) > 1 else "activealign-mlflow"
    created = ensure_bucket(bucket, os.environ["MLFLOW_S3_ENDPOINT_URL"])
    logger.info("bucket %s %s", bucket, "created" if created else "already exists")
