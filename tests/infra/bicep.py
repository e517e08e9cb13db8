"""The Bicep templates under infra/ read as data, so tests can state what they promise an admin.

pycep-parser turns a file into nested dicts. It writes an identifier (a parameter, variable or symbol) and a
string literal the same way, as a plain string, so `Template.resolve` replaces strings that name a variable of
the same file with that variable's value; property chains such as `roles.storageBlobDataOwner` become dotted
strings first. No Bicep compiler is involved: these are structural checks, not a build.
"""

from __future__ import annotations

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
