"""Settings of the AWS provisioner (`--aws-…`, `JOBFLEET_AWS_…`).

No field holds a credential: boto3 finds them through its usual chain (environment variables,
the shared credentials and config files, SSO, the instance profile of the machine the host runs
on). Lists are written as text so that each can be given on a command line or in one variable:

- `security_group_ids`: `sg-1,sg-2`;
- `tags`: `key=value,key2=value2`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from jobfleet.core.settings import setting

# What jobfleet's own tags use; a user tag may not take these keys.
RESERVED_TAG_PREFIXES = ("jobfleet:", "aws:")
_AMI = re.compile(r"ami-[0-9a-f]{8,17}")
_TEMPLATE_ID = re.compile(r"lt-[0-9a-f]{8,17}")


@dataclass(frozen=True)
class AwsSettings:
    region: str | None = setting(
        None, help="AWS region of the nodes (default: boto3's, e.g. $AWS_DEFAULT_REGION)."
    )
    profile: str | None = setting(
        None, help="Profile of the shared AWS config files (default: boto3's credential chain)."
    )
    endpoint_url: str | None = setting(
        None, help="EC2 endpoint URL (default: the region's); for an EC2-compatible API."
    )
    image_id: str | None = setting(
        None, help="AMI the nodes boot, with jobfleet-worker-node installed (see docs/aws.md)."
    )
    launch_template: str | None = setting(
        None,
        help="Launch template (an lt-… id or a name) the nodes start from; image_id, when "
        "given too, overrides its AMI.",
    )
    launch_template_version: str = setting(
        "$Default", help="Version of the launch template: a number, $Default or $Latest."
    )
    subnet_id: str | None = setting(
        None, help="Subnet of the nodes (default: the template's, else the default VPC's)."
    )
    security_group_ids: str = setting(
        "", help="Security groups of the nodes (ids, comma-separated)."
    )
    key_name: str | None = setting(None, help="EC2 key pair authorised for SSH on the nodes.")
    instance_profile: str | None = setting(
        None, help="IAM instance profile of the nodes (a name or an arn:aws:iam::… ARN)."
    )
    tags: str = setting("", help="More tags on every node and its volumes: key=value,key2=value2.")
    volume_size: int = setting(
        50, help="Root volume of each node in GiB (gp3, deleted with the node); 0: the AMI's own."
    )
    user_data_extra: Path | None = setting(
        None,
        help="A file added to the nodes' cloud-init user data as a second part (a script "
        "starting with #!, or #cloud-config); never put secrets in it.",
    )
    node_wall_time: float = setting(
        3600.0,
        help="Allocation slice of a node in seconds: the scaler packs short tasks into it one "
        "after another.",
    )
    page_size: int = setting(1000, help="Results per DescribeInstances page (5 to 1000).")
    api_retries: int = setting(
        4, help="Retries of an EC2 call that was throttled or failed in transit (with backoff)."
    )
    retry_delay: float = setting(
        1.0, help="Seconds before the first retry of a throttled call; doubled at each retry."
    )

    def __post_init__(self) -> None:
        if self.image_id is not None and not _AMI.fullmatch(self.image_id):
            raise ValueError(
                f"image_id must be an AMI id such as ami-0123456789abcdef0, not {self.image_id!r}"
            )
        if self.volume_size < 0:
            raise ValueError(f"volume_size must be 0 or more GiB, not {self.volume_size}")
        if not 5 <= self.page_size <= 1000:
            raise ValueError(f"page_size must be between 5 and 1000, not {self.page_size}")
        if self.api_retries < 0:
            raise ValueError(f"api_retries must be 0 or more, not {self.api_retries}")
        if self.retry_delay < 0:
            raise ValueError(f"retry_delay must be 0 or more seconds, not {self.retry_delay}")
        if self.node_wall_time <= 0:
            raise ValueError(f"node_wall_time must be positive, not {self.node_wall_time}")
        parse_tags(self.tags)
        for group in self.security_groups():
            if not group.startswith("sg-"):
                raise ValueError(f"security_group_ids holds {group!r}, not an sg-… id")

    def security_groups(self) -> list[str]:
        return [part.strip() for part in self.security_group_ids.split(",") if part.strip()]

    def user_tags(self) -> dict[str, str]:
        return parse_tags(self.tags)

    def launch_template_spec(self) -> dict[str, str] | None:
        """The `LaunchTemplate` parameter of RunInstances (None without a template)."""
        if self.launch_template is None:
            return None
        key = (
            "LaunchTemplateId"
            if _TEMPLATE_ID.fullmatch(self.launch_template)
            else ("LaunchTemplateName")
        )
        return {key: self.launch_template, "Version": self.launch_template_version}


def parse_tags(text: str) -> dict[str, str]:
    """Read `key=value,key2=value2`; raise ValueError naming the bad part."""
    tags: dict[str, str] = {}
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        key, equals, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not equals or not key:
            raise ValueError(f"tags: {part!r} is not key=value")
        if key.lower().startswith(RESERVED_TAG_PREFIXES):
            raise ValueError(f"tags: the key {key!r} is reserved (jobfleet:… and aws:… are)")
        if len(key) > 128 or len(value) > 256:
            raise ValueError(f"tags: {part!r} is longer than EC2 allows (128, 256 characters)")
        tags[key] = value
    return tags
