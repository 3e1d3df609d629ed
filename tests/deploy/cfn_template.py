"""Read the SAM template with its intrinsic tags, and resolve intrinsics for given parameters.

PyYAML's safe loader refuses CloudFormation's short forms (!Ref, !Sub, !GetAtt, ...); this
loader turns them into their long forms ({"Ref": ...}, {"Fn::Sub": ...}) so tests can read the
template as plain data. `Resolver` evaluates the handful of intrinsics the template uses, with
explicit parameters and physical names, so policies can be compared as concrete documents.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SAM_TEMPLATE = REPO / "deploy" / "aws" / "template.yaml"

ACCOUNT = "123456789012"  # moto's default account, also used for static resolution
REGION = "us-east-1"
PARTITION = "aws"
RESULT_QUEUE = "hybridsphere-test-ResultEventsQueue-1A2B3C"  # as CloudFormation would name it

_SCALAR_FUNCTIONS = {"Ref": "Ref", "Condition": "Condition"}
_FUNCTIONS = [
    "Base64",
    "Cidr",
    "FindInMap",
    "GetAZs",
    "If",
    "ImportValue",
    "Join",
    "Select",
    "Split",
    "Sub",
    "Transform",
    "And",
    "Equals",
    "Not",
    "Or",
]


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that understands CloudFormation's short-form intrinsic tags."""


def _construct(tag: str, node: yaml.Node, loader: CfnLoader) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag in _SCALAR_FUNCTIONS:
        return {_SCALAR_FUNCTIONS[tag]: value}
    if tag == "GetAtt":
        return {"Fn::GetAtt": value.split(".", 1) if isinstance(value, str) else value}
    return {f"Fn::{tag}": value}


for _tag in [*_SCALAR_FUNCTIONS, "GetAtt", *_FUNCTIONS]:
    CfnLoader.add_constructor(
        f"!{_tag}",
        lambda loader, node, tag=_tag: _construct(tag, node, loader),
    )


def load_template(path: Path = SAM_TEMPLATE) -> dict[str, Any]:
    """The template as plain data with long-form intrinsics."""
    data = yaml.load(path.read_text(), Loader=CfnLoader)  # noqa: S506 - CfnLoader is a SafeLoader
    assert isinstance(data, dict)
    return data


def parameter_defaults(template: Mapping[str, Any]) -> dict[str, str]:
    """Every parameter's default, as the string CloudFormation would pass."""
    return {
        name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()
    }


class _NoValue:
    """AWS::NoValue: removes the property or list item it stands in."""


NO_VALUE = _NoValue()
_SUB_VAR = re.compile(r"\$\{([^}!][^}]*)\}")


class Resolver:
    """Evaluates Ref, Fn::Sub, Fn::GetAtt, Fn::If and the condition functions.

    `physical` maps a logical resource id to what `Ref` returns; `attributes` maps
    "LogicalId.Attribute" to what `Fn::GetAtt` returns. Anything else unknown raises, so a
    template change that this resolver cannot follow fails loudly instead of passing.
    """

    def __init__(
        self,
        template: Mapping[str, Any],
        parameters: Mapping[str, str] | None = None,
        physical: Mapping[str, str] | None = None,
        attributes: Mapping[str, str] | None = None,
        *,
        account: str = ACCOUNT,
        region: str = REGION,
    ) -> None:
        self.template = template
        self.parameters = {**parameter_defaults(template), **(parameters or {})}
        self.pseudo = {
            "AWS::AccountId": account,
            "AWS::Region": region,
            "AWS::Partition": PARTITION,
            "AWS::StackName": "hybridsphere-test",
            "AWS::URLSuffix": "amazonaws.com",
        }
        self.physical = dict(physical or {})
        self.attributes = dict(attributes or {})
        self._conditions: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            self._conditions[name] = bool(self.resolve(self.template["Conditions"][name]))
        return self._conditions[name]

    def resource_exists(self, logical_id: str) -> bool:
        cond = self.template["Resources"][logical_id].get("Condition")
        return cond is None or self.condition(cond)

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self.resolve(item) for item in node]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                return self._ref(arg)
            if key == "Condition":
                return self.condition(arg)
            if key.startswith("Fn::"):
                return self._function(key[4:], arg)
        resolved = {key: self.resolve(value) for key, value in node.items()}
        return {key: value for key, value in resolved.items() if value is not NO_VALUE}

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.physical:
            return self.physical[name]
        raise KeyError(f"Ref {name!r}: no parameter or physical id given")

    def _get_att(self, logical_id: str, attribute: str) -> str:
        key = f"{logical_id}.{attribute}"
        if key in self.attributes:
            return self.attributes[key]
        raise KeyError(f"GetAtt {key!r}: no attribute value given")

    def _function(self, name: str, arg: Any) -> Any:  # noqa: PLR0911 - one return per intrinsic
        if name == "If":
            cond, when_true, when_false = arg
            return self.resolve(when_true if self.condition(cond) else when_false)
        if name == "Equals":
            left, right = (self.resolve(a) for a in arg)
            return str(left) == str(right)
        if name == "Not":
            return not self.resolve(arg[0])
        if name == "And":
            return all(self.resolve(a) for a in arg)
        if name == "Or":
            return any(self.resolve(a) for a in arg)
        if name == "GetAtt":
            return self._get_att(*arg)
        if name == "Select":
            index, items = arg
            return self.resolve(items)[int(self.resolve(index))]
        if name == "Join":
            sep, items = arg
            return sep.join(str(i) for i in self.resolve(items))
        if name == "Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else arg
            variables = {k: self.resolve(v) for k, v in variables.items()}
            return _SUB_VAR.sub(lambda m: str(self._sub_var(m.group(1), variables)), text)
        raise NotImplementedError(f"Fn::{name} is not handled by the test resolver")

    def _sub_var(self, name: str, variables: Mapping[str, Any]) -> Any:
        if name in variables:
            return variables[name]
        if "." in name:
            logical_id, attribute = name.split(".", 1)
            return self._get_att(logical_id, attribute)
        return self._ref(name)


def static_names(template: Mapping[str, Any], parameters: Mapping[str, str]) -> Resolver:
    """A resolver whose resource Refs/GetAtts are what AWS would return, from the names."""
    r = Resolver(template, parameters)
    p = r.parameters["NamePrefix"]
    suffix = f"{ACCOUNT}-{REGION}"
    fn = f"{p}-face-recognition"
    fn_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{fn}"
    sqs = f"arn:aws:sqs:{REGION}:{ACCOUNT}"
    r.physical.update(
        {
            "InputBucket": f"{p}-input-{suffix}",
            "OutputBucket": f"{p}-output-{suffix}",
            "StudentsTable": f"{p}-students",
            "FaceRecognitionFunction": fn,
            "FunctionLogGroup": f"/aws/lambda/{fn}",
            "InputBucketInvokePermission": "permission-id",
            "InputEventsQueuePolicy": "queue-policy-id",
            "InputEventsQueue": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{p}-input-events",
            "AlarmTopic": f"arn:aws:sns:{REGION}:{ACCOUNT}:{p}-alarms",
            # Unnamed in the template: CloudFormation names it <stack>-<logical id>-<random>.
            "ResultEventsQueuePolicy": "result-queue-policy-id",
            "ResultEventsQueue": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{RESULT_QUEUE}",
        }
    )
    r.attributes.update(
        {
            "InputBucket.Arn": f"arn:aws:s3:::{p}-input-{suffix}",
            "OutputBucket.Arn": f"arn:aws:s3:::{p}-output-{suffix}",
            "FaceRecognitionFunction.Arn": fn_arn,
            "FunctionRole.Arn": f"arn:aws:iam::{ACCOUNT}:role/{p}-function-role",
            "InputEventsQueue.Arn": f"{sqs}:{p}-input-events",
            "InputEventsDeadLetterQueue.Arn": f"{sqs}:{p}-input-events-dlq",
            "FailedInvocationsQueue.Arn": f"{sqs}:{p}-failed-invocations",
            "InputEventsQueue.QueueName": f"{p}-input-events",
            "InputEventsDeadLetterQueue.QueueName": f"{p}-input-events-dlq",
            "FailedInvocationsQueue.QueueName": f"{p}-failed-invocations",
            "ResultEventsQueue.Arn": f"{sqs}:{RESULT_QUEUE}",
        }
    )
    return r
