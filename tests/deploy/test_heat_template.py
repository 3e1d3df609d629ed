"""deploy/openstack/heat.yaml: parsed, and holding the resources issue 5 asks for, wired right.

There is no offline Heat validator, so the checks are structural: every reference resolves,
the security group admits only SSH from the given CIDR, and the user-data placeholders are
exactly the ones Heat fills in.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

OPENSTACK = Path(__file__).resolve().parents[2] / "deploy" / "openstack"
HEAT = OPENSTACK / "heat.yaml"
TEMPLATE: dict[str, Any] = yaml.safe_load(HEAT.read_text())
RESOURCES: dict[str, Any] = TEMPLATE["resources"]
PARAMETERS: dict[str, Any] = TEMPLATE["parameters"]
# HOT versions from Newton (2016-10-14) on; each release keeps the earlier ones.
KNOWN_HOT_VERSIONS = {
    "2016-10-14",
    "2017-02-24",
    "2017-09-01",
    "2018-03-02",
    "2018-08-31",
    "2021-04-16",
}


def _walk(node: Any) -> Any:
    """Every dict in the template, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _of_type(kind: str) -> dict[str, Any]:
    return {name: res for name, res in RESOURCES.items() if res["type"] == kind}


def test_template_version_is_a_known_hot_version() -> None:
    assert str(TEMPLATE["heat_template_version"]) in KNOWN_HOT_VERSIONS


def test_the_required_resources_are_all_there_and_nothing_else() -> None:
    kinds = sorted(res["type"] for res in RESOURCES.values())
    assert kinds == sorted(
        [
            "OS::Neutron::Net",
            "OS::Neutron::Subnet",
            "OS::Neutron::Router",
            "OS::Neutron::RouterInterface",
            "OS::Neutron::SecurityGroup",
            "OS::Neutron::Port",
            "OS::Neutron::FloatingIP",
            "OS::Nova::Server",
            "OS::Cinder::Volume",
            "OS::Cinder::VolumeAttachment",
            "OS::Heat::WaitConditionHandle",
            "OS::Heat::WaitCondition",
        ]
    )


def test_every_reference_resolves() -> None:
    pseudo = {"OS::stack_name", "OS::stack_id", "OS::project_id"}
    for node in _walk(TEMPLATE):
        if "get_param" in node:
            name = node["get_param"]
            name = name[0] if isinstance(name, list) else name
            assert name in PARAMETERS or name in pseudo, name
        if "get_resource" in node:
            assert node["get_resource"] in RESOURCES, node
        if "get_attr" in node:
            assert node["get_attr"][0] in RESOURCES, node
    for res in RESOURCES.values():
        depends = res.get("depends_on", [])
        for name in [depends] if isinstance(depends, str) else depends:
            assert name in RESOURCES, name
    used = {node["get_param"] for node in _walk(TEMPLATE) if isinstance(node.get("get_param"), str)}
    assert set(PARAMETERS) <= used, set(PARAMETERS) - used  # no dead parameters


def test_network_reaches_the_public_network_through_a_router() -> None:
    (subnet,) = _of_type("OS::Neutron::Subnet").values()
    (net_name,) = _of_type("OS::Neutron::Net")
    assert subnet["properties"]["network"] == {"get_resource": net_name}
    (router_name, router) = next(iter(_of_type("OS::Neutron::Router").items()))
    assert router["properties"]["external_gateway_info"]["network"] == {
        "get_param": "public_network"
    }
    (interface,) = _of_type("OS::Neutron::RouterInterface").values()
    (subnet_name,) = _of_type("OS::Neutron::Subnet")
    assert interface["properties"] == {
        "router": {"get_resource": router_name},
        "subnet": {"get_resource": subnet_name},
    }


def test_security_group_admits_only_ssh_from_the_given_cidr() -> None:
    (sg_name, sg) = next(iter(_of_type("OS::Neutron::SecurityGroup").items()))
    assert sg["properties"]["rules"] == [
        {
            "direction": "ingress",
            "ethertype": "IPv4",
            "protocol": "tcp",
            "port_range_min": 22,
            "port_range_max": 22,
            "remote_ip_prefix": {"get_param": "ssh_cidr"},
        }
    ]
    # No default: whoever deploys must say who may SSH in.
    assert "default" not in PARAMETERS["ssh_cidr"]
    pattern = PARAMETERS["ssh_cidr"]["constraints"][0]["allowed_pattern"]
    assert re.fullmatch(pattern, "203.0.113.7/32")
    assert not re.fullmatch(pattern, "203.0.113.7")
    (port,) = _of_type("OS::Neutron::Port").values()
    assert port["properties"]["security_groups"] == [{"get_resource": sg_name}]


def test_server_has_its_port_a_floating_ip_and_the_user_data() -> None:
    (port_name,) = _of_type("OS::Neutron::Port")
    (server,) = _of_type("OS::Nova::Server").values()
    props = server["properties"]
    assert props["networks"] == [{"port": {"get_resource": port_name}}]
    assert props["key_name"] == {"get_param": "key_name"}
    assert "ubuntu" in PARAMETERS["image"]["default"]
    (fip,) = _of_type("OS::Neutron::FloatingIP").values()
    assert fip["properties"]["port_id"] == {"get_resource": port_name}
    assert fip["properties"]["floating_network"] == {"get_param": "public_network"}
    (interface_name,) = _of_type("OS::Neutron::RouterInterface")
    assert fip["depends_on"] == interface_name
    assert props["user_data_format"] == "RAW"
    replace = props["user_data"]["str_replace"]
    assert replace["template"] == {"get_file": "user-data.yaml"}
    assert (HEAT.parent / "user-data.yaml").is_file()


def test_heat_fills_exactly_the_user_data_placeholders() -> None:
    (server,) = _of_type("OS::Nova::Server").values()
    params = server["properties"]["user_data"]["str_replace"]["params"]
    placeholders = set(re.findall(r"__[A-Z_]+__", (OPENSTACK / "user-data.yaml").read_text()))
    assert set(params) == placeholders


def test_credentials_are_hidden_parameters() -> None:
    for name in ("aws_access_key_id", "aws_secret_access_key"):
        assert PARAMETERS[name]["hidden"] is True
    visible_defaults = " ".join(str(p.get("default", "")) for p in PARAMETERS.values())
    assert "AKIA" not in visible_defaults


def test_outputs_give_the_address() -> None:
    assert TEMPLATE["outputs"]["floating_ip"]["value"] == {
        "get_attr": [next(iter(_of_type("OS::Neutron::FloatingIP"))), "floating_ip_address"]
    }


def _user_data_params() -> dict[str, Any]:
    (server,) = _of_type("OS::Nova::Server").values()
    params: dict[str, Any] = server["properties"]["user_data"]["str_replace"]["params"]
    return params


def test_the_stack_completes_only_when_cloud_init_says_the_watcher_runs() -> None:
    (handle_name,) = _of_type("OS::Heat::WaitConditionHandle")
    (wait,) = _of_type("OS::Heat::WaitCondition").values()
    assert wait["properties"]["handle"] == {"get_resource": handle_name}
    assert wait["properties"]["count"] == 1
    assert wait["properties"]["timeout"] == {"get_param": "boot_timeout"}
    # The signal is the handle's own command, handed to cloud-init through the user-data.
    assert _user_data_params()["__WAIT_NOTIFY__"] == {"get_attr": [handle_name, "curl_cli"]}
    # Waiting starts once the volume is attached (the bootstrap waits for it too).
    (attachment_name,) = _of_type("OS::Cinder::VolumeAttachment")
    assert wait["depends_on"] == attachment_name


def test_the_staging_root_is_a_volume_of_the_given_size_on_the_server() -> None:
    (volume_name, volume) = next(iter(_of_type("OS::Cinder::Volume").items()))
    assert volume["properties"]["size"] == {"get_param": "staging_volume_gb"}
    (attachment,) = _of_type("OS::Cinder::VolumeAttachment").values()
    (server_name,) = _of_type("OS::Nova::Server")
    assert attachment["properties"] == {
        "instance_uuid": {"get_resource": server_name},
        "volume_id": {"get_resource": volume_name},
    }
    assert _user_data_params()["__STAGING_VOLUME_ID__"] == {"get_resource": volume_name}


def test_outputs_give_the_addresses_and_the_staging_path() -> None:
    outputs = TEMPLATE["outputs"]
    (port_name,) = _of_type("OS::Neutron::Port")
    assert outputs["private_ip"]["value"] == {"get_attr": [port_name, "fixed_ips", 0, "ip_address"]}
    # The same path as the unit's StateDirectory and the config's staging_root.
    assert outputs["staging_path"]["value"] == "/var/lib/hybrid-watcher"
    unit = (OPENSTACK.parents[1] / "systemd" / "hybrid-watcher.service").read_text()
    assert "StateDirectory=hybrid-watcher" in unit
    assert 'staging_root = "/var/lib/hybrid-watcher"' in (OPENSTACK / "user-data.yaml").read_text()
