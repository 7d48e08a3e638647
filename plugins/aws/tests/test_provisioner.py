"""The AWS provisioner against a moto server: spot, tags, pagination, batches, throttling,
capacity, shapes, user data and credentials.

Faults moto cannot produce (throttling, no spot capacity) are injected in the tests only, by a
botocore event handler on the provisioner's own client: the request goes through real botocore
up to the point of sending, so the provisioner's retry and fallback paths run as they would
against EC2.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from jobfleet.core.scaling import (
    NODE_NAME_TAG,
    InstanceConfiguration,
    NodeType,
    ProvisionerError,
)
from jobfleet.core.settings import resolve_settings, setting_options
from jobfleet.plugins.aws.provisioner import (
    CLUSTER_TAG,
    NODE_TYPE_TAG,
    PREEMPTIBLE_TAG,
    RUN_TAG,
    AwsProvisioner,
)
from jobfleet.plugins.aws.settings import AwsSettings

NODE_TYPE = "c5.large"
REGION = "us-east-1"  # the tests' (conftest.py)


def client_error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} (injected)"}}, operation)


class Calls:
    """Records the parameters of every call of one operation on a client; can fail the first
    `fail` of them with an error code, before anything is sent."""

    def __init__(self, client: Any, operation: str, fail: int = 0, code: str = "") -> None:
        self.params: list[dict[str, Any]] = []
        self.failures_left = fail
        self.code = code
        self.operation = operation
        client.meta.events.register(f"provide-client-params.ec2.{operation}", self._record)
        client.meta.events.register(f"before-call.ec2.{operation}", self._fail)

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        self.params.append(dict(params))

    def _fail(self, **_: Any) -> None:
        if self.failures_left > 0:
            self.failures_left -= 1
            raise client_error(self.code, self.operation)

    def __len__(self) -> int:
        return len(self.params)


def instances(ec2: Any, ids: list[str]) -> list[dict[str, Any]]:
    found = ec2.describe_instances(InstanceIds=ids)["Reservations"]
    return [instance for reservation in found for instance in reservation["Instances"]]


def state(ec2: Any, instance_id: str) -> str:
    return str(instances(ec2, [instance_id])[0]["State"]["Name"])


# -- spot ---------------------------------------------------------------------------------------


def test_spot_nodes_go_through_the_market_options_with_the_bid(make_aws: Any, ec2: Any) -> None:
    provisioner = make_aws(node_types="c5.large:0.07,m5.large")
    runs = Calls(provisioner.client, "RunInstances")
    added = provisioner.add_nodes(NODE_TYPE, 2, preemptible=True)
    assert len(added) == 2
    assert all(node.preemptible for node in added)
    market = runs.params[0]["InstanceMarketOptions"]
    assert market["MarketType"] == "spot"
    assert market["SpotOptions"]["MaxPrice"] == "0.07"  # the node type's bid
    assert {i["InstanceLifecycle"] for i in instances(ec2, [n.name for n in added])} == {"spot"}

    provisioner.add_nodes(NODE_TYPE, 1, preemptible=True, spot_bid=0.11)
    assert runs.params[1]["InstanceMarketOptions"]["SpotOptions"]["MaxPrice"] == "0.11"
    provisioner.add_nodes("m5.large", 1)
    assert "InstanceMarketOptions" not in runs.params[2]
    spot = provisioner.get_provisioned_workers(preemptible=True)
    assert len(spot) == 3
    assert [n.node_type for n in provisioner.get_provisioned_workers(preemptible=False)] == [
        "m5.large"
    ]


@pytest.mark.parametrize(
    "code", ["InsufficientInstanceCapacity", "SpotMaxPriceTooLow", "MaxSpotInstanceCountExceeded"]
)
def test_no_spot_capacity_means_no_nodes_not_an_error(
    make_aws: Any, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    provisioner = make_aws()
    runs = Calls(provisioner.client, "RunInstances", fail=99, code=code)
    with caplog.at_level(logging.WARNING, logger="jobfleet.plugins.aws"):
        assert provisioner.add_nodes(NODE_TYPE, 3, preemptible=True, spot_bid=0.01) == []
    assert [p["MinCount"] for p in runs.params] == [3, 1]  # all, then as many as there are
    assert code in caplog.text
    assert provisioner.get_provisioned_workers() == []


def test_short_capacity_gives_fewer_nodes(make_aws: Any) -> None:
    provisioner = make_aws()
    runs = Calls(provisioner.client, "RunInstances", fail=1, code="InsufficientInstanceCapacity")
    added = provisioner.add_nodes(NODE_TYPE, 3, preemptible=True, spot_bid=0.02)
    # EC2 launches between MinCount and MaxCount; moto launches MinCount (1).
    assert 1 <= len(added) < 3
    assert (runs.params[1]["MinCount"], runs.params[1]["MaxCount"]) == (1, 3)


def test_other_launch_errors_are_raised(make_aws: Any) -> None:
    provisioner = make_aws()
    Calls(provisioner.client, "RunInstances", fail=1, code="UnauthorizedOperation")
    with pytest.raises(ClientError, match="UnauthorizedOperation"):
        provisioner.add_nodes(NODE_TYPE, 1)
    assert provisioner.retry_predicate(client_error("UnauthorizedOperation", "X")) is False


# -- tags ---------------------------------------------------------------------------------------


def test_nodes_carry_the_cluster_run_type_and_user_tags(make_aws: Any, ec2: Any) -> None:
    provisioner = make_aws("tagged-cluster", run_id="run-42", tags="team=genomics,cost=lab-7")
    (node,) = provisioner.add_nodes(NODE_TYPE, 1)
    (instance,) = instances(ec2, [node.name])
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags[CLUSTER_TAG] == "tagged-cluster"
    assert tags[RUN_TAG] == "run-42"
    assert tags[NODE_TYPE_TAG] == NODE_TYPE
    assert tags[PREEMPTIBLE_TAG] == "false"
    assert tags["team"] == "genomics"
    assert tags["cost"] == "lab-7"
    assert tags["Name"] == f"jobfleet-tagged-cluster-{NODE_TYPE}"
    assert node.private_ip == instance["PrivateIpAddress"]
    assert node.launched_at is not None
    assert node.tags[NODE_NAME_TAG] == instance["PrivateDnsName"]
    assert instance["PrivateIpAddress"] in node.known_names()


def test_the_run_tag_follows_from_the_hosts_cluster_name(make_aws: Any, ec2: Any) -> None:
    (node,) = make_aws("kubernetes-run-17").add_nodes(NODE_TYPE, 1)
    assert node.tags[RUN_TAG] == "17"
    assert "jobfleet:run" not in make_aws("no-run-here").add_nodes(NODE_TYPE, 1)[0].tags


def test_other_clusters_instances_are_never_listed_nor_terminated(
    make_aws: Any, ec2: Any, image_id: str
) -> None:
    ours = make_aws()
    theirs = make_aws()
    (mine,) = ours.add_nodes(NODE_TYPE, 1)
    (their_node,) = theirs.add_nodes(NODE_TYPE, 1)
    untagged = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1)["Instances"][0]
    # Another cluster's tag with our name as a prefix must not match either.
    lookalike = ec2.run_instances(
        ImageId=image_id,
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [{"Key": CLUSTER_TAG, "Value": ours.cluster_name + "-2"}],
            }
        ],
    )["Instances"][0]
    try:
        assert [n.name for n in ours.get_provisioned_workers()] == [mine.name]
        ours.terminate_nodes([their_node, mine])  # a foreign node handed in by mistake
        ours.destroy_cluster()
        for survivor in (their_node.name, untagged["InstanceId"], lookalike["InstanceId"]):
            assert state(ec2, survivor) in ("pending", "running")
        assert state(ec2, mine.name) in ("shutting-down", "terminated")
        assert [n.name for n in theirs.get_provisioned_workers()] == [their_node.name]
    finally:
        ec2.terminate_instances(InstanceIds=[untagged["InstanceId"], lookalike["InstanceId"]])


def test_listings_ask_ec2_for_the_clusters_tag_only(make_aws: Any) -> None:
    provisioner = make_aws()
    described = Calls(provisioner.client, "DescribeInstances")
    provisioner.get_provisioned_workers(node_type=NODE_TYPE)
    filters = {f["Name"]: f["Values"] for f in described.params[0]["Filters"]}
    assert filters[f"tag:{CLUSTER_TAG}"] == [provisioner.cluster_name]
    assert filters[f"tag:{NODE_TYPE_TAG}"] == [NODE_TYPE]
    assert "InstanceIds" not in described.params[0]


# -- pagination and batches --------------------------------------------------------------------


def test_listing_reads_every_page(make_aws: Any) -> None:
    provisioner = make_aws(page_size=5)
    added = [node for _ in range(12) for node in provisioner.add_nodes(NODE_TYPE, 1)]
    described = Calls(provisioner.client, "DescribeInstances")
    listed = provisioner.get_provisioned_workers()
    assert sorted(n.name for n in listed) == sorted(n.name for n in added)
    assert len(described) >= 3  # 12 reservations, 5 a page
    assert all(p["MaxResults"] == 5 for p in described.params)
    assert "NextToken" in described.params[-1]


def test_termination_goes_in_batches(make_aws: Any, ec2: Any) -> None:
    assert AwsProvisioner.terminate_batch_size == 1000  # EC2's most per call
    provisioner = make_aws()
    provisioner.terminate_batch_size = 3
    added = provisioner.add_nodes(NODE_TYPE, 7)
    terminations = Calls(provisioner.client, "TerminateInstances")
    provisioner.terminate_nodes(added)
    assert [len(p["InstanceIds"]) for p in terminations.params] == [3, 3, 1]
    assert provisioner.get_provisioned_workers() == []
    assert {state(ec2, n.name) for n in added} <= {"shutting-down", "terminated"}


# -- throttling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["RequestLimitExceeded", "Throttling"])
def test_throttled_launch_is_retried_with_backoff(
    make_aws: Any, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    provisioner = make_aws()
    runs = Calls(provisioner.client, "RunInstances", fail=2, code=code)
    with caplog.at_level(logging.WARNING, logger="jobfleet.plugins.aws"):
        added = provisioner.add_nodes(NODE_TYPE, 2)
    assert len(added) == 2
    assert len(runs) == 3
    # The same client token on every attempt: EC2 never launches a retried request twice.
    assert len({p["ClientToken"] for p in runs.params}) == 1
    assert caplog.text.count(code) == 2
    assert len(provisioner.get_provisioned_workers()) == 2


def test_throttled_listing_and_termination_are_retried(make_aws: Any) -> None:
    provisioner = make_aws()
    added = provisioner.add_nodes(NODE_TYPE, 2)
    Calls(provisioner.client, "DescribeInstances", fail=2, code="RequestLimitExceeded")
    Calls(provisioner.client, "TerminateInstances", fail=1, code="Throttling")
    assert len(provisioner.get_provisioned_workers()) == 2
    provisioner.terminate_nodes(added)
    assert provisioner.get_provisioned_workers() == []


def test_throttling_past_the_retries_reaches_the_scaler(make_aws: Any) -> None:
    provisioner = make_aws(api_retries=2)
    runs = Calls(provisioner.client, "RunInstances", fail=99, code="RequestLimitExceeded")
    with pytest.raises(ClientError) as caught:
        provisioner.add_nodes(NODE_TYPE, 1)
    assert len(runs) == 3
    assert provisioner.retry_predicate(caught.value) is True  # the scaler retries later


def test_connection_failures_are_retried(settings: AwsSettings) -> None:
    from botocore.exceptions import EndpointConnectionError

    nowhere = replace(settings, endpoint_url="http://127.0.0.1:9", api_retries=1)
    provisioner = AwsProvisioner("unreachable", settings=nowhere)
    with pytest.raises(EndpointConnectionError) as caught:
        provisioner.get_provisioned_workers()
    assert provisioner.retry_predicate(caught.value) is True


# -- shapes -------------------------------------------------------------------------------------


def test_shapes_come_from_describe_instance_types(make_aws: Any, ec2: Any) -> None:
    provisioner = make_aws(node_wall_time=1800.0)
    described = Calls(provisioner.client, "DescribeInstanceTypes")
    for name in ("c5.large", "m5d.large", "g4dn.xlarge"):
        (info,) = ec2.describe_instance_types(InstanceTypes=[name])["InstanceTypes"]
        shape = provisioner.get_node_shape(name)
        assert shape.cores == info["VCpuInfo"]["DefaultVCpus"]
        assert shape.memory == info["MemoryInfo"]["SizeInMiB"] * 2**20
        assert shape.wall_time == 1800.0
        gpus = sum(g["Count"] for g in info.get("GpuInfo", {}).get("Gpus", []))
        assert shape.gpus == gpus
        storage = info.get("InstanceStorageInfo", {}).get("TotalSizeInGB", 0)
        assert shape.disk == (storage * 10**9 if storage else 50 * 2**30)
    assert provisioner.get_node_shape("g4dn.xlarge").gpus >= 1
    assert provisioner.get_node_shape("m5d.large").disk == 75 * 10**9
    assert provisioner.get_node_shape("c5.large", preemptible=True).preemptible is True
    assert len(described) == 3  # one call per type, then the cache


def test_without_a_volume_size_the_disk_is_the_amis_root_volume(make_aws: Any, ec2: Any) -> None:
    provisioner = make_aws(volume_size=0)
    image = ec2.describe_images(ImageIds=[provisioner.settings.image_id])["Images"][0]
    root = next(
        m for m in image["BlockDeviceMappings"] if m["DeviceName"] == image["RootDeviceName"]
    )
    assert provisioner.get_node_shape(NODE_TYPE).disk == root["Ebs"]["VolumeSize"] * 2**30


def test_an_unknown_type_is_a_clear_error(make_aws: Any) -> None:
    with pytest.raises(ProvisionerError, match=r"no instance type 'c5\.nonesuch'"):
        make_aws().get_node_shape("c5.nonesuch")


def test_the_root_volume_is_sized_on_the_amis_root_device(make_aws: Any, ec2: Any) -> None:
    provisioner = make_aws(volume_size=80)
    runs = Calls(provisioner.client, "RunInstances")
    provisioner.add_nodes(NODE_TYPE, 1)
    image = ec2.describe_images(ImageIds=[provisioner.settings.image_id])["Images"][0]
    (mapping,) = runs.params[0]["BlockDeviceMappings"]
    assert mapping["DeviceName"] == image["RootDeviceName"]
    assert mapping["Ebs"] == {"VolumeSize": 80, "VolumeType": "gp3", "DeleteOnTermination": True}


# -- launch templates and the other settings ---------------------------------------------------


def test_nodes_start_from_a_launch_template(make_aws: Any, ec2: Any, image_id: str) -> None:
    name = f"jobfleet-test-{id(ec2):x}"
    template = ec2.create_launch_template(
        LaunchTemplateName=name, LaunchTemplateData={"ImageId": image_id}
    )["LaunchTemplate"]
    try:
        for reference in (name, template["LaunchTemplateId"]):
            provisioner = make_aws(image_id=None, launch_template=reference)
            runs = Calls(provisioner.client, "RunInstances")
            (node,) = provisioner.add_nodes(NODE_TYPE, 1)
            sent = runs.params[0]
            assert "ImageId" not in sent
            key = "LaunchTemplateId" if reference.startswith("lt-") else "LaunchTemplateName"
            assert sent["LaunchTemplate"] == {key: reference, "Version": "$Default"}
            assert instances(ec2, [node.name])[0]["ImageId"] == image_id
            assert sent["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 50
    finally:
        ec2.delete_launch_template(LaunchTemplateName=name)


def test_network_key_and_profile_settings_reach_run_instances(
    make_aws: Any, ec2: Any, moto_endpoint: str
) -> None:
    import boto3

    iam = boto3.client("iam", region_name=REGION, endpoint_url=moto_endpoint)
    profile = iam.create_instance_profile(InstanceProfileName="jobfleet-node")["InstanceProfile"]
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="jobfleet-test", Description="t", VpcId=vpc)
    ec2.create_key_pair(KeyName="jobfleet-test-key")
    provisioner = make_aws(
        subnet_id=subnet,
        security_group_ids=group["GroupId"],
        key_name="jobfleet-test-key",
        instance_profile=profile["Arn"],
    )
    runs = Calls(provisioner.client, "RunInstances")
    (node,) = provisioner.add_nodes(NODE_TYPE, 1)
    sent = runs.params[0]
    assert sent["SubnetId"] == subnet
    assert sent["SecurityGroupIds"] == [group["GroupId"]]
    assert sent["KeyName"] == "jobfleet-test-key"
    assert sent["IamInstanceProfile"] == {"Arn": profile["Arn"]}
    by_name = make_aws(instance_profile="jobfleet-node")
    named = Calls(by_name.client, "RunInstances")
    by_name.add_nodes(NODE_TYPE, 1)
    assert named.params[0]["IamInstanceProfile"] == {"Name": "jobfleet-node"}
    (instance,) = instances(ec2, [node.name])
    assert instance["SubnetId"] == subnet
    assert instance["KeyName"] == "jobfleet-test-key"


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="AMI id"):
        AwsSettings(image_id="ubuntu")
    with pytest.raises(ValueError, match="reserved"):
        AwsSettings(tags="jobfleet:cluster=x")
    with pytest.raises(ValueError, match="not key=value"):
        AwsSettings(tags="team")
    with pytest.raises(ValueError, match="sg-"):
        AwsSettings(security_group_ids="default")
    with pytest.raises(ValueError, match="page_size"):
        AwsSettings(page_size=2)
    with pytest.raises(ProvisionerError, match="--aws-image-id"):
        AwsProvisioner("c", settings=AwsSettings())
    with pytest.raises(TypeError, match="unknown parameters: colour"):
        AwsProvisioner("c", settings=AwsSettings(image_id="ami-12c6146b"), colour="red")


def test_settings_read_from_the_environment() -> None:
    settings = resolve_settings(
        "aws",
        AwsSettings,
        environ={
            "JOBFLEET_AWS_SECURITY_GROUP_IDS": "sg-1, sg-2",
            "JOBFLEET_AWS_TAGS": "a=1,b=2",
            "JOBFLEET_AWS_VOLUME_SIZE": "100",
        },
    )
    assert settings.security_groups() == ["sg-1", "sg-2"]
    assert settings.user_tags() == {"a": "1", "b": "2"}
    assert settings.volume_size == 100


def test_add_managed_nodes_is_refused_with_a_reason(make_aws: Any) -> None:
    from jobfleet.core.scaling import ManagedNodesNotSupported

    with pytest.raises(ManagedNodesNotSupported, match="Auto Scaling"):
        make_aws().add_managed_nodes(NODE_TYPE, 0, 3)


# -- user data and credentials -----------------------------------------------------------------


def configuration() -> InstanceConfiguration:
    config = InstanceConfiguration()
    config.add_file("/etc/jobfleet/agent.env", "MESOS_MASTER=10.0.0.5:5050\n")
    config.add_unit("jobfleet-agent.service", "[Service]\nExecStart=/usr/bin/true\n")
    config.add_ssh_public_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAItest admin@host")
    return config


def user_data_of(ec2: Any, instance_id: str) -> str:
    found = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    return base64.b64decode(found["UserData"]["Value"]).decode()


def test_the_instance_configuration_is_the_user_data(make_aws: Any, ec2: Any) -> None:
    config = configuration()
    provisioner = make_aws(instance_configuration=config)
    (node,) = provisioner.add_nodes(NODE_TYPE, 1)
    assert user_data_of(ec2, node.name) == config.render()


def test_user_data_extra_is_a_second_part(make_aws: Any, ec2: Any, tmp_path: Path) -> None:
    extra = tmp_path / "extra.sh"
    extra.write_text("#!/bin/sh\necho extra > /var/tmp/extra\n")
    provisioner = make_aws(instance_configuration=configuration(), user_data_extra=extra)
    (node,) = provisioner.add_nodes(NODE_TYPE, 1)
    text = user_data_of(ec2, node.name)
    assert text.startswith("Content-Type: multipart/mixed")
    assert 'Content-Type: text/cloud-config; charset="utf-8"' in text
    assert 'Content-Type: text/x-shellscript; charset="utf-8"' in text


@pytest.mark.parametrize(
    "leak",
    [
        "<session secret>",  # this session's own secret key
        "AKIAIOSFODNN7EXAMPLE",  # anything shaped like an access key id
        "aws_secret_access_key = x",
    ],
)
def test_user_data_with_credentials_is_refused(
    make_aws: Any, leak: str, tmp_path: Path, fake_credentials: tuple[str, str]
) -> None:
    leak = leak.replace("<session secret>", fake_credentials[1])
    config = InstanceConfiguration()
    config.add_file("/root/.aws/credentials", f"[default]\nkey={leak}\n")
    provisioner = make_aws(instance_configuration=config)
    runs = Calls(provisioner.client, "RunInstances")
    with pytest.raises(ProvisionerError, match="holds AWS credentials") as caught:
        provisioner.add_nodes(NODE_TYPE, 1)
    assert leak not in str(caught.value)
    assert len(runs) == 0
    extra = tmp_path / "extra.sh"
    extra.write_text(f"#!/bin/sh\nexport AWS_SECRET_ACCESS_KEY={leak}\n")
    with pytest.raises(ProvisionerError, match="holds AWS credentials"):
        make_aws(user_data_extra=extra).add_nodes(NODE_TYPE, 1)


def test_no_secret_in_user_data_logs_or_settings(
    make_aws: Any, ec2: Any, caplog: pytest.LogCaptureFixture, fake_credentials: tuple[str, str]
) -> None:
    key_id, secret = fake_credentials
    caplog.set_level(logging.DEBUG)  # botocore's own debug logs included
    provisioner = make_aws(instance_configuration=configuration(), tags="team=x")
    Calls(provisioner.client, "RunInstances", fail=1, code="RequestLimitExceeded")
    added = provisioner.add_nodes(NODE_TYPE, 2, preemptible=True, spot_bid=0.05)
    provisioner.get_node_shape(NODE_TYPE)
    provisioner.get_provisioned_workers()
    provisioner.terminate_nodes(added)
    assert "RequestLimitExceeded" in caplog.text  # the logs were captured
    secrets = (secret, key_id)
    texts = {
        "logs": caplog.text,
        "user data": provisioner.user_data() + user_data_of(ec2, added[0].name),
        "settings": repr(provisioner.settings),
        "provisioner": repr(provisioner),
        "nodes": repr(added),
    }
    for where, text in texts.items():
        assert secret not in text, f"the secret key is in the {where}"
        if where != "logs":  # botocore's debug log names the key id when it signs a request
            assert not any(secret in text for secret in secrets), f"a credential in the {where}"
    options = setting_options("aws", AwsSettings)
    assert not [o.field for o in options if "secret" in o.field or "access_key" in o.field]


def test_node_types_given_as_a_spec_or_a_list(make_aws: Any) -> None:
    assert make_aws(node_types="c5.large:0.05,m5.large").node_types == [
        NodeType("c5.large", 0.05),
        NodeType("m5.large"),
    ]
    assert make_aws(node_types=[NodeType("c5.large")]).node_types == [NodeType("c5.large")]


def test_credentials_come_from_the_environment_chain(
    make_aws: Any, fake_credentials: tuple[str, str]
) -> None:
    credentials = make_aws()._session_credentials()
    assert credentials.access_key == fake_credentials[0]
    assert make_aws().client.meta.region_name == REGION
