"""The `aws` plugin is found as a provisioner (not a backend), with its settings."""

from __future__ import annotations

import pytest

from jobfleet.core.errors import UnknownClusterError
from jobfleet.core.plugins import PROVISIONER, PluginRegistry, PluginStatus
from jobfleet.plugins.aws.provisioner import AwsProvisioner
from jobfleet.plugins.aws.settings import AwsSettings


def test_the_plugin_is_a_provisioner_with_settings() -> None:
    registry = PluginRegistry(environ={})
    assert registry.kinds("aws") == (PROVISIONER,)
    plugin = registry.get_provisioner("aws")
    assert plugin.provisioner_class is AwsProvisioner
    assert plugin.settings_class is AwsSettings
    assert plugin.distribution == "jobfleet-aws"
    listed = {info.name: info for info in registry.list_plugins()}
    assert listed["aws"].status is PluginStatus.OK
    assert listed["aws"].kinds == (PROVISIONER,)
    with pytest.raises(UnknownClusterError, match="provisioner, not a backend"):
        registry.get_cluster("aws")


def test_settings_come_from_options_and_variables() -> None:
    plugin = PluginRegistry(environ={}).get_provisioner("aws")
    settings = plugin.settings({"image_id": "ami-12c6146b"}, {"JOBFLEET_AWS_REGION": "eu-west-1"})
    assert (settings.image_id, settings.region) == ("ami-12c6146b", "eu-west-1")
    flags = {option.flag for option in plugin.setting_options()}
    assert {"--aws-image-id", "--aws-launch-template", "--aws-instance-profile"} <= flags
