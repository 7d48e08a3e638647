"""The EC2 provisioner: worker nodes as EC2 instances, found again by their tags.

Every instance it launches carries the tags `jobfleet:cluster` (the cluster's name),
`jobfleet:node-type`, `jobfleet:preemptible` and, when the host gives one, `jobfleet:run`;
every listing and termination is filtered by `jobfleet:cluster`, so instances of other clusters
(and everything else in the account) are never listed, let alone terminated.

Credentials come from boto3's own chain only. Nothing here stores, logs or passes one on, and
user data that holds the session's secret (or anything shaped like an access key) is refused
before it leaves the host: user data is readable by anyone on the node.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any, TypeVar

from jobfleet.core.scaling import (
    NODE_NAME_TAG,
    InstanceConfiguration,
    ManagedNodesNotSupported,
    Node,
    NodeType,
    Provisioner,
    ProvisionerError,
    Shape,
    parse_node_types,
)
from jobfleet.plugins.aws.settings import AwsSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

CLUSTER_TAG = "jobfleet:cluster"
RUN_TAG = "jobfleet:run"
NODE_TYPE_TAG = "jobfleet:node-type"
PREEMPTIBLE_TAG = "jobfleet:preemptible"

# Error codes of a throttled or briefly unavailable API: worth a retry after a pause.
THROTTLING_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "EC2ThrottledException",
        "ServiceUnavailable",
        "Unavailable",
        "InternalError",
        "InternalFailure",
    }
)

# Error codes that mean "no such capacity now" (or not at that price): fewer nodes, not a
# failure; the scaler then falls back (to on-demand nodes, another type, a later round).
CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "SpotMaxPriceTooLow",
        "MaxSpotInstanceCountExceeded",
        "InstanceLimitExceeded",
        "VcpuLimitExceeded",
        "Unsupported",
    }
)

LIVE_STATES = ("pending", "running")
# What destroy_cluster terminates: everything not already going away.
NOT_TERMINATED_STATES = ("pending", "running", "stopping", "stopped")

_RUN_SUFFIX = re.compile(r"-run-(\d+)$")
MAX_USER_DATA_BYTES = 16 * 1024  # EC2's limit, before base64
# An access key id (long-term AKIA…, temporary ASIA…) or a secret key written as a setting.
_CREDENTIAL_SHAPES = re.compile(
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|aws_secret_access_key|aws_session_token", re.IGNORECASE
)


def error_code(error: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError (None for any other error)."""
    response = getattr(error, "response", None)
    if isinstance(response, Mapping):
        code = response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


class AwsProvisioner(Provisioner):
    """Adds and removes EC2 instances of one cluster.

    Parameters (beyond the settings): `run_id` (tagged on every node; by default the run id
    of a cluster named `…-run-<id>`, as the host names them), `node_types` (a list of
    `NodeType` or a spec such as `c5.large:0.05,m5.xlarge`) and `instance_configuration` (an
    `InstanceConfiguration` rendered as the nodes' cloud-init user data).
    """

    terminate_batch_size = 1000
    """Instance ids per TerminateInstances call (EC2 takes at most 1000)."""

    def __init__(
        self,
        cluster_name: str,
        *,
        settings: Any = None,
        run_id: str | None = None,
        node_types: Sequence[NodeType] | str = (),
        instance_configuration: InstanceConfiguration | None = None,
        **parameters: Any,
    ) -> None:
        if parameters:
            raise TypeError(f"AwsProvisioner got unknown parameters: {', '.join(parameters)}")
        if not cluster_name or len(cluster_name) > 256:
            raise ProvisionerError(
                f"The cluster name must be 1 to 256 characters (an EC2 tag value), not "
                f"{cluster_name!r}"
            )
        self.cluster_name = cluster_name
        self.settings: AwsSettings = settings if settings is not None else AwsSettings()
        if not isinstance(self.settings, AwsSettings):
            raise TypeError(f"settings must be AwsSettings, not {type(self.settings).__name__}")
        if self.settings.image_id is None and self.settings.launch_template is None:
            raise ProvisionerError(
                "The AWS provisioner needs an AMI (--aws-image-id) or a launch template "
                "(--aws-launch-template) to start nodes from."
            )
        # The host names a run's cluster `<cluster>-run-<run id>`: the run tag follows from it.
        found = _RUN_SUFFIX.search(cluster_name)
        self.run_id = run_id if run_id is not None else (found.group(1) if found else None)
        self.node_types: list[NodeType] = (
            parse_node_types(node_types) if isinstance(node_types, str) else list(node_types)
        )
        self.instance_configuration = instance_configuration or InstanceConfiguration()
        self._lock = threading.Lock()
        self._client: Any = None
        self._session: Any = None
        self._shapes: dict[str, dict[str, Any]] = {}
        self._root_devices: dict[str, tuple[str | None, int | None]] = {}

    def __repr__(self) -> str:
        return f"AwsProvisioner(cluster_name={self.cluster_name!r}, settings={self.settings!r})"

    # -- the client -----------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The boto3 EC2 client, made on first use from boto3's usual credential chain."""
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                self._session = boto3.session.Session(
                    profile_name=self.settings.profile, region_name=self.settings.region
                )
                # Every retry is this provisioner's (retry_predicate, backoff): botocore's own
                # would multiply the attempts.
                config = Config(
                    retries={"mode": "standard", "total_max_attempts": 1},
                    user_agent_extra="jobfleet-aws",
                )
                self._client = self._session.client(
                    "ec2", endpoint_url=self.settings.endpoint_url, config=config
                )
            return self._client

    def retry_predicate(self, error: BaseException) -> bool:
        """Throttling (`RequestLimitExceeded`, `Throttling`, …), a 5xx from EC2, or a
        connection that failed or timed out: worth retrying after a pause."""
        code = error_code(error)
        if code is not None:
            return code in THROTTLING_CODES
        try:
            from botocore.exceptions import (
                ConnectionClosedError,
                ConnectTimeoutError,
                EndpointConnectionError,
                ReadTimeoutError,
            )
        except ImportError:  # pragma: no cover - boto3 is a dependency
            return False
        transient = (
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )
        return isinstance(error, transient)

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        """`call()`, retried with exponential backoff (and jitter) while `retry_predicate`
        says so, at most `api_retries` times."""
        attempt = 0
        while True:
            try:
                return call()
            except Exception as exc:
                if attempt >= self.settings.api_retries or not self.retry_predicate(exc):
                    raise
                delay = min(60.0, self.settings.retry_delay * 2**attempt)
                delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret
                attempt += 1
                log.warning(
                    "EC2 %s: %s; retry %d of %d in %.2f s",
                    what,
                    error_code(exc) or type(exc).__name__,
                    attempt,
                    self.settings.api_retries,
                    delay,
                )
                time.sleep(delay)

    def _call(self, operation: str, **kwargs: Any) -> Any:
        return self._retrying(operation, lambda: getattr(self.client, operation)(**kwargs))

    # -- launching ------------------------------------------------------------------------------

    def add_nodes(
        self,
        node_type: str,
        count: int,
        *,
        preemptible: bool = False,
        spot_bid: float | None = None,
    ) -> list[Node]:
        if count <= 0:
            return []
        if preemptible and spot_bid is None:
            spot_bid = next((t.spot_bid for t in self.node_types if t.name == node_type), None)
        request = self._run_request(node_type, preemptible, spot_bid)
        instances = self._launch(request, node_type, count, preemptible)
        nodes = [self._node(instance) for instance in instances]
        log.info(
            "launched %d of %d %s %s node(s) for cluster %s",
            len(nodes),
            count,
            "spot" if preemptible else "on-demand",
            node_type,
            self.cluster_name,
        )
        return nodes

    def _launch(
        self, request: dict[str, Any], node_type: str, count: int, preemptible: bool
    ) -> list[dict[str, Any]]:
        """RunInstances for `count` nodes; then, if capacity is short, for as many as EC2 has
        (MinCount=1). A capacity error there means none: an empty list."""
        kind = "spot" if preemptible else "on-demand"
        for minimum in (count, 1) if count > 1 else (1,):
            token = uuid.uuid4().hex  # one per request, kept across retries: no double launch
            try:
                response = self._call(
                    "run_instances", MinCount=minimum, MaxCount=count, ClientToken=token, **request
                )
            except Exception as exc:
                code = error_code(exc)
                if code not in CAPACITY_CODES:
                    raise
                log.warning(
                    "no %s capacity for %d %s node(s) (%s%s)",
                    kind,
                    minimum,
                    node_type,
                    code,
                    "" if minimum == 1 else "; asking for fewer",
                )
                continue
            return list(response.get("Instances", []))
        return []

    def _run_request(
        self, node_type: str, preemptible: bool, spot_bid: float | None
    ) -> dict[str, Any]:
        settings = self.settings
        tags = {
            **settings.user_tags(),
            "Name": f"jobfleet-{self.cluster_name}-{node_type}"[:256],
            CLUSTER_TAG: self.cluster_name,
            NODE_TYPE_TAG: node_type,
            PREEMPTIBLE_TAG: "true" if preemptible else "false",
        }
        if self.run_id is not None:
            tags[RUN_TAG] = self.run_id
        tag_list = [{"Key": key, "Value": value} for key, value in tags.items()]
        request: dict[str, Any] = {
            "InstanceType": node_type,
            "UserData": self.user_data(),
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tag_list},
                {"ResourceType": "volume", "Tags": tag_list},
            ],
        }
        template = settings.launch_template_spec()
        if template is not None:
            request["LaunchTemplate"] = template
        if settings.image_id is not None:
            request["ImageId"] = settings.image_id
        if settings.subnet_id is not None:
            request["SubnetId"] = settings.subnet_id
        if settings.security_groups():
            request["SecurityGroupIds"] = settings.security_groups()
        if settings.key_name is not None:
            request["KeyName"] = settings.key_name
        if settings.instance_profile is not None:
            profile = settings.instance_profile
            request["IamInstanceProfile"] = (
                {"Arn": profile} if profile.startswith("arn:") else {"Name": profile}
            )
        if settings.volume_size > 0:
            device, _ = self._root_device()
            if device is not None:
                request["BlockDeviceMappings"] = [
                    {
                        "DeviceName": device,
                        "Ebs": {
                            "VolumeSize": settings.volume_size,
                            "VolumeType": "gp3",
                            "DeleteOnTermination": True,
                        },
                    }
                ]
        if preemptible:
            spot: dict[str, Any] = {
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
            }
            if spot_bid is not None:
                spot["MaxPrice"] = f"{spot_bid:g}"
            request["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": spot}
        return request

    def _root_device(self) -> tuple[str | None, int | None]:
        """The AMI's root device name and size in GiB (that of the launch template's AMI when
        no image_id is set); cached."""
        image_id = self.settings.image_id
        key = image_id or f"template:{self.settings.launch_template}"
        if key not in self._root_devices:
            found: tuple[str | None, int | None] = (None, None)
            if image_id is None:
                image_id = self._template_image()
            if image_id is not None:
                images = self._call("describe_images", ImageIds=[image_id]).get("Images", [])
                if images:
                    image = images[0]
                    device = image.get("RootDeviceName")
                    size = next(
                        (
                            mapping.get("Ebs", {}).get("VolumeSize")
                            for mapping in image.get("BlockDeviceMappings", [])
                            if mapping.get("DeviceName") == device
                        ),
                        None,
                    )
                    found = (device, size)
            self._root_devices[key] = found
        return self._root_devices[key]

    def _template_image(self) -> str | None:
        template = self.settings.launch_template_spec()
        if template is None:
            return None
        query = {k: v for k, v in template.items() if k != "Version"}
        versions = self._call(
            "describe_launch_template_versions", Versions=[template["Version"]], **query
        ).get("LaunchTemplateVersions", [])
        if not versions:
            return None
        image = versions[0].get("LaunchTemplateData", {}).get("ImageId")
        return str(image) if image else None

    def user_data(self) -> str:
        """The nodes' user data: the instance configuration as `#cloud-config`, with the
        `user_data_extra` file as a second MIME part when one is set.

        Refused when it holds this session's AWS secret key or token, or text shaped like an
        access key: user data is readable on the node and through the EC2 API.
        """
        rendered = self.instance_configuration.render()
        extra_path = self.settings.user_data_extra
        extra = None if extra_path is None else extra_path.read_text()
        # Checked as written: a MIME part is base64 on the wire.
        self._refuse_credentials(rendered if extra is None else f"{rendered}\n{extra}")
        if extra is not None:
            message = MIMEMultipart()
            for part in (rendered, extra):
                subtype = "cloud-config" if part.startswith("#cloud-config") else "x-shellscript"
                message.attach(MIMEText(part, subtype, "utf-8"))
            rendered = message.as_string()
        size = len(rendered.encode())
        if size > MAX_USER_DATA_BYTES:
            raise ProvisionerError(
                f"The nodes' user data is {size} bytes; EC2 takes at most {MAX_USER_DATA_BYTES}. "
                "Install large files in the AMI instead."
            )
        return rendered

    def _refuse_credentials(self, text: str) -> None:
        secrets: list[str] = []
        credentials = self._session_credentials()
        if credentials is not None:
            secrets += [s for s in (credentials.secret_key, credentials.token) if s]
        if any(secret in text for secret in secrets) or _CREDENTIAL_SHAPES.search(text):
            # Never say which: the message itself goes to logs.
            raise ProvisionerError(
                "The nodes' user data holds AWS credentials; it is readable on every node and "
                "through the EC2 API. Give the nodes an instance profile (--aws-instance-profile) "
                "instead."
            )

    def _session_credentials(self) -> Any:
        self.client  # noqa: B018 - makes the session
        credentials = self._session.get_credentials()
        return None if credentials is None else credentials.get_frozen_credentials()

    # -- listing and terminating ----------------------------------------------------------------

    def _instances(
        self, states: Sequence[str], filters: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Every instance of this cluster in `states` (and with the tags of `filters`),
        read page by page; the whole listing is retried when a page is throttled."""
        query = [
            {"Name": f"tag:{CLUSTER_TAG}", "Values": [self.cluster_name]},
            {"Name": "instance-state-name", "Values": list(states)},
        ]
        query += [
            {"Name": f"tag:{key}", "Values": [value]} for key, value in (filters or {}).items()
        ]

        def read() -> list[dict[str, Any]]:
            paginator = self.client.get_paginator("describe_instances")
            pages = paginator.paginate(
                Filters=query, PaginationConfig={"PageSize": self.settings.page_size}
            )
            return [
                instance
                for page in pages
                for reservation in page.get("Reservations", [])
                for instance in reservation.get("Instances", [])
            ]

        found = self._retrying("describe_instances", read)
        # The filter is the server's; this check keeps a lax server (or a tag filter it does
        # not understand) from handing over another cluster's instances.
        return [i for i in found if _tags(i).get(CLUSTER_TAG) == self.cluster_name]

    def get_provisioned_workers(
        self, node_type: str | None = None, preemptible: bool | None = None
    ) -> list[Node]:
        filters: dict[str, str] = {}
        if node_type is not None:
            filters[NODE_TYPE_TAG] = node_type
        nodes = [self._node(instance) for instance in self._instances(LIVE_STATES, filters)]
        return [
            node
            for node in nodes
            if (node_type is None or node.node_type == node_type)
            and (preemptible is None or node.preemptible == preemptible)
        ]

    def terminate_nodes(self, nodes: Sequence[Node]) -> None:
        """Terminate these nodes, if they are this cluster's: an id that is not (any more)
        among its instances is skipped, never terminated."""
        wanted = {node.name for node in nodes}
        if not wanted:
            return
        ours = [i["InstanceId"] for i in self._instances(NOT_TERMINATED_STATES)]
        ids = [instance_id for instance_id in ours if instance_id in wanted]
        foreign = wanted - set(ids)
        if foreign:
            log.warning(
                "not terminating %d instance(s) that are not cluster %s's live nodes: %s",
                len(foreign),
                self.cluster_name,
                ", ".join(sorted(foreign)),
            )
        self._terminate(ids)

    def _terminate(self, ids: Sequence[str]) -> None:
        for batch in _batches(ids, self.terminate_batch_size):
            self._call("terminate_instances", InstanceIds=list(batch))
            log.info("terminated %d instance(s) of cluster %s", len(batch), self.cluster_name)

    def destroy_cluster(self) -> None:
        """Terminate every instance of this cluster (it creates nothing else: the AMI, the
        launch template, subnets and security groups are the user's)."""
        self._terminate([i["InstanceId"] for i in self._instances(NOT_TERMINATED_STATES)])

    def add_managed_nodes(
        self,
        node_type: str,
        min_nodes: int,
        max_nodes: int,
        *,
        preemptible: bool = False,
        spot_bid: float | None = None,
    ) -> None:
        raise ManagedNodesNotSupported(
            "The AWS provisioner launches and terminates instances itself; it does not create "
            "EC2 Auto Scaling groups."
        )

    # -- shapes ---------------------------------------------------------------------------------

    def get_node_shape(self, node_type: str, preemptible: bool = False) -> Shape:
        """From DescribeInstanceTypes (once per type): vCPUs, memory, GPUs and instance
        storage; a type without instance storage offers its root volume as disk."""
        info = self._instance_type(node_type)
        memory = int(info.get("MemoryInfo", {}).get("SizeInMiB", 0)) * 2**20
        cores = float(info.get("VCpuInfo", {}).get("DefaultVCpus", 0))
        gpus = sum(int(gpu.get("Count", 0)) for gpu in info.get("GpuInfo", {}).get("Gpus", []))
        storage_gb = int(info.get("InstanceStorageInfo", {}).get("TotalSizeInGB", 0))
        if storage_gb:
            disk = storage_gb * 10**9  # instance storage is sold in GB
        elif self.settings.volume_size > 0:
            disk = self.settings.volume_size * 2**30
        else:
            disk = (self._root_device()[1] or 0) * 2**30
        return Shape(
            wall_time=self.settings.node_wall_time,
            memory=memory,
            cores=cores,
            disk=disk,
            preemptible=preemptible,
            gpus=gpus,
        )

    def _instance_type(self, node_type: str) -> dict[str, Any]:
        if node_type not in self._shapes:
            try:
                found = self._call("describe_instance_types", InstanceTypes=[node_type])
            except Exception as exc:
                if error_code(exc) in ("InvalidInstanceType", "InvalidParameterValue"):
                    raise ProvisionerError(
                        f"EC2 has no instance type {node_type!r} in this region"
                    ) from exc
                raise
            types = found.get("InstanceTypes", [])
            if not types:
                raise ProvisionerError(f"EC2 has no instance type {node_type!r} in this region")
            self._shapes[node_type] = types[0]
        return self._shapes[node_type]

    # -- nodes ----------------------------------------------------------------------------------

    def _node(self, instance: Mapping[str, Any]) -> Node:
        tags = _tags(instance)
        if instance.get("PrivateDnsName"):
            tags.setdefault(NODE_NAME_TAG, str(instance["PrivateDnsName"]))
        preemptible = (
            instance.get("InstanceLifecycle") == "spot" or tags.get(PREEMPTIBLE_TAG) == "true"
        )
        return Node(
            name=str(instance["InstanceId"]),
            node_type=tags.get(NODE_TYPE_TAG) or str(instance.get("InstanceType", "")),
            preemptible=preemptible,
            private_ip=instance.get("PrivateIpAddress"),
            public_ip=instance.get("PublicIpAddress"),
            launched_at=instance.get("LaunchTime"),
            tags=tags,
        )


def _tags(instance: Mapping[str, Any]) -> dict[str, str]:
    return {str(tag["Key"]): str(tag.get("Value", "")) for tag in instance.get("Tags", [])}


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
