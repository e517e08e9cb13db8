"""The Bicep templates under infra/ read as data, so tests can state what they promise an admin.

pycep-parser turns a file into nested dicts. It writes an identifier (a parameter, variable or symbol) and a
string literal the same way, as a plain string, so `Template.resolve` replaces strings that name a variable of
the same file with that variable's value; property chains such as `roles.storageBlobDataOwner` become dotted
strings first. No Bicep compiler is involved: these are structural checks, not a build.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


@cache
def parse(path: Path) -> dict[str, Any]:
    from pycep import BicepParser

    return BicepParser().parse(file_path=path)


def dotted(expr: Any) -> str | None:
    """`a.b.c` (pycep nests property accessors to the right) as one dotted string; None for anything else."""
    if isinstance(expr, str):
        return expr
    if isinstance(expr, dict) and expr.get("operator", {}).get("type") == "property_accessor":
        operands = expr["operator"]["operands"]
        left, right = dotted(operands["operand_1"]), dotted(operands["operand_2"])
        if left is not None and right is not None:
            return f"{left}.{right}"
    return None


def unwrap(node: dict[str, Any]) -> dict[str, Any]:
    """The body of a resource or module, past pycep's wrappers for `if (...)` and `for ... in`."""
    body = node["config"]
    while isinstance(body, dict) and "config" in body and ("condition" in body or "loop_type" in body):
        body = body["config"]
    return body


def condition(node: dict[str, Any]) -> Any:
    """The `if (...)` of a resource or module, or None."""
    return node["config"].get("condition")


class Template:
    def __init__(self, relative: str) -> None:
        self.path = INFRA / relative
        self.data = parse(self.path)

    @property
    def params(self) -> dict[str, Any]:
        return self.data.get("parameters", {})

    @property
    def variables(self) -> dict[str, Any]:
        return self.data.get("variables", {})

    @property
    def resources(self) -> dict[str, Any]:
        return self.data.get("resources", {})

    @property
    def modules(self) -> dict[str, Any]:
        return self.data.get("modules", {})

    @property
    def outputs(self) -> dict[str, Any]:
        return self.data.get("outputs", {})

    def module_params(self, symbol: str) -> dict[str, Any]:
        return unwrap(self.modules[symbol]).get("params", {})

    def default(self, param: str) -> Any:
        return self.params[param]["default"]

    def resolve(self, expr: Any) -> Any:
        """Replace variable references (plain or `var.property`) by their values, recursively."""
        if isinstance(expr, list):
            return [self.resolve(item) for item in expr]
        name = dotted(expr)
        if name is not None:
            head, _, rest = name.partition(".")
            if isinstance(expr, str) and "${" in expr:
                return re.sub(r"\$\{(\w+)\}", self._interpolate, expr)
            if head in self.variables:
                value = self.variables[head]["value"]
                for key in rest.split(".") if rest else []:
                    value = value[key]
                return self.resolve(value)
            return name
        if isinstance(expr, dict) and "operator" not in expr and "function" not in expr:
            return {key: self.resolve(value) for key, value in expr.items()}
        return expr

    def _interpolate(self, match: re.Match[str]) -> str:
        if match.group(1) not in self.variables:
            return match.group(0)
        value = self.resolve(match.group(1))
        return value if isinstance(value, str) else match.group(0)


class BicepFail(Exception):
    """A Bicep `fail('...')` reached while evaluating: the deployment would stop with this message."""


def evaluate(template: Template, expr: Any, scope: dict[str, Any]) -> Any:
    """Evaluate a parsed Bicep expression for given parameter (and module output) values.

    Covers the subset the templates use for decisions: literals, parameter and variable references, dotted
    module outputs, `${}` interpolation, `? :`, `&&`, `||`, `!`, `==`, `!=` and the functions empty, fail, join,
    concat, bool, json and union. Anything else raises NotImplementedError, so a test never passes on a guess. pycep does
    not tell identifiers from string literals: a plain string naming a scope entry or variable is a reference.
    """
    if isinstance(expr, (bool, int, float)) or expr is None:
        return expr
    if isinstance(expr, list):
        return [evaluate(template, item, scope) for item in expr]
    if isinstance(expr, str):
        if expr in scope:
            return scope[expr]
        if expr in template.variables:
            return evaluate(template, template.variables[expr]["value"], scope)
        if "${" in expr:
            return re.sub(r"\$\{([\w.]+)\}", lambda m: str(evaluate(template, m.group(1), scope)), expr)
        return expr
    if not isinstance(expr, dict):
        raise NotImplementedError(repr(expr))
    if "operator" in expr:
        name = dotted(expr)
        if name is not None:
            if name in scope:
                return scope[name]
            raise NotImplementedError(f"no value for {name}")
        op = expr["operator"]["type"]
        args = expr["operator"]["operands"]
        if op == "conditional":
            branch = "true_value" if evaluate(template, args["condition"], scope) else "false_value"
            return evaluate(template, args[branch], scope)
        if op == "and":
            return bool(evaluate(template, args["operand_1"], scope)) and bool(
                evaluate(template, args["operand_2"], scope)
            )
        if op == "or":
            return bool(evaluate(template, args["operand_1"], scope)) or bool(
                evaluate(template, args["operand_2"], scope)
            )
        if op == "not":
            return not evaluate(template, args["bool_value"], scope)
        if op in {"equals", "not_equals"}:
            same = evaluate(template, args["operand_1"], scope) == evaluate(template, args["operand_2"], scope)
            return same if op == "equals" else not same
        raise NotImplementedError(op)
    if "function" in expr:
        fn = expr["function"]["type"]
        params = [evaluate(template, p, scope) for p in expr["function"]["parameters"].values()]
        if fn == "fail":
            raise BicepFail(params[0])
        if fn == "empty":
            return not params[0]
        if fn == "join":
            return params[1].join(params[0])
        if fn == "concat":
            return [x for p in params for x in p] if isinstance(params[0], list) else "".join(params)
        if fn == "bool":
            return params[0] if isinstance(params[0], bool) else str(params[0]).lower() == "true"
        if fn == "json":
            return json.loads(params[0])
        if fn == "union":
            return {k: v for p in params for k, v in p.items()}
        raise NotImplementedError(fn)
    return {key: evaluate(template, value, scope) for key, value in expr.items()}


def scope_of(template: Template, **values: Any) -> dict[str, Any]:
    """Parameter defaults of `template`, overridden by `values` (also dotted module outputs)."""
    scope = {name: param["default"] for name, param in template.params.items() if param.get("default") is not None}
    scope.update(values)
    return scope
