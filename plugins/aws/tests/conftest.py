"""Fixtures of the AWS provisioner's tests: a moto server on loopback, reached over HTTP by the
real boto3 client (nothing of boto3 is stubbed).

One server serves the whole module; every test uses clusters of its own names, so the tags keep
them apart exactly as they keep real clusters apart in one account. The credentials are fake
and exist only in the tests' environment.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from jobfleet.plugins.aws.provisioner import AwsProvisioner
from jobfleet.plugins.aws.settings import AwsSettings

REGION = "us-east-1"
FAKE_KEY_ID = "AKIAFAKEJOBFLEET0001"
FAKE_SECRET = "fake-secret-Zq8PjobfleetNEVERshown42"  # noqa: S105 - a fake, for moto


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[str, str]:
    """boto3's chain finds these in the environment; no shared file of the machine is read.
    Returns (access key id, secret key)."""
    for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return FAKE_KEY_ID, FAKE_SECRET


@pytest.fixture
def ec2(moto_endpoint: str, fake_credentials: tuple[str, str]) -> Any:
    """A plain boto3 client of the same server, to look behind the provisioner's back."""
    import boto3

    return boto3.client("ec2", region_name=REGION, endpoint_url=moto_endpoint)


@pytest.fixture(scope="module")
def image_id(moto_endpoint: str) -> str:
    """One of the AMIs moto comes with (looked up once: the listing is long)."""
    import boto3

    client = boto3.client(
        "ec2",
        region_name=REGION,
        endpoint_url=moto_endpoint,
        aws_access_key_id=FAKE_KEY_ID,
        aws_secret_access_key=FAKE_SECRET,
    )
    images = client.describe_images(Owners=["amazon"])["Images"]
    return str(sorted(image["ImageId"] for image in images)[0])


@pytest.fixture
def settings(moto_endpoint: str, image_id: str) -> AwsSettings:
    return AwsSettings(
        region=REGION, endpoint_url=moto_endpoint, image_id=image_id, retry_delay=0.01
    )


MakeAws = Callable[..., AwsProvisioner]


@pytest.fixture
def make_aws(settings: AwsSettings) -> Iterator[MakeAws]:
    """`make(cluster_name, **settings_changes)`; every cluster made is destroyed afterwards."""
    made: list[AwsProvisioner] = []

    def make(cluster_name: str | None = None, **changes: Any) -> AwsProvisioner:
        parameters = {k: changes.pop(k) for k in ("run_id", "node_types") if k in changes}
        if "instance_configuration" in changes:
            parameters["instance_configuration"] = changes.pop("instance_configuration")
        provisioner = AwsProvisioner(
            cluster_name or f"test-{uuid.uuid4().hex[:8]}",
            settings=replace(settings, **changes),
            **parameters,
        )
        made.append(provisioner)
        return provisioner

    yield make
    for provisioner in made:
        provisioner.destroy_cluster()
