"""Provisioners and autoscaling: shapes, node types, the provisioner protocol, user data and the
cluster scaler. See docs/scaling.md."""

from jobfleet.core.scaling.node_types import (
    NODE_TYPES_FORMS,
    NodeType,
    NodeTypeError,
    format_node_types,
    parse_node_types,
)
from jobfleet.core.scaling.provisioner import (
    NODE_NAME_TAG,
    ManagedNodesNotSupported,
    Node,
    Provisioner,
    ProvisionerError,
    provisioner_problems,
)
from jobfleet.core.scaling.shape import UNBOUNDED, Shape
from jobfleet.core.scaling.user_data import InstanceConfiguration

__all__ = [
    "NODE_NAME_TAG",
    "NODE_TYPES_FORMS",
    "UNBOUNDED",
    "InstanceConfiguration",
    "ManagedNodesNotSupported",
    "Node",
    "NodeType",
    "NodeTypeError",
    "Provisioner",
    "ProvisionerError",
    "Shape",
    "format_node_types",
    "parse_node_types",
    "provisioner_problems",
]
