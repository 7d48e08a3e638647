"""The AWS provisioner: the cluster scaler's nodes as EC2 instances (a provisioner, not a backend).

The nodes join a cluster that a backend (Slurm, Mesos, Kubernetes) runs; see docs/aws.md.
"""

from __future__ import annotations

from collections.abc import Mapping

from jobfleet.core.hookspecs import hookimpl


@hookimpl
def get_provisioner_class() -> type:
    from jobfleet.plugins.aws.provisioner import AwsProvisioner

    return AwsProvisioner


@hookimpl
def get_cluster_settings_class() -> type:
    from jobfleet.plugins.aws.settings import AwsSettings

    return AwsSettings


@hookimpl
def get_cluster_version_info() -> Mapping[str, str]:
    from importlib.metadata import version

    return {"boto3": version("boto3"), "botocore": version("botocore")}
