"""params.yaml and sweep files from disk: YAML with duplicate keys refused, `--set key=value` overrides, and
validation errors reported one line per key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from unseen.config.runtime import ParamsError
from unseen.config.sections import Params


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ParamsError(f"--set {dotted}: {part!r} is a value, not a section")
        node = child
    node[leaf] = value


def format_validation_error(source: str, error: ValidationError, what: str = "params") -> str:
    """One line per problem, each naming the dotted key: how every invalid params or sweep file is reported."""
    lines = [f"{source}: invalid {what}"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = "unknown key, remove it or check its spelling" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML would silently keep the last)."""

    def construct_mapping(self, node, deep=False):
        keys = [(self.construct_object(key_node, deep=deep), key_node.start_mark.line + 1) for key_node, _ in node.value]
        for index, (key, line) in enumerate(keys):
            if key in [k for k, _ in keys[:index]]:
                raise ParamsError(f"line {line}: key {key!r} is given twice; keep one")
        return super().construct_mapping(node, deep=deep)


def read_yaml_mapping(path: str | Path, what: str, hint: str) -> dict[str, Any]:
    """A YAML file whose top level is a non-empty mapping, or a ParamsError naming the file (`hint`: what to pass instead)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: {what} file not found; {hint}")
    try:
        tree = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None
    if tree is None:
        raise ParamsError(f"{path}: the file is empty; write the sections to change (an empty mapping {{}} keeps every default)")
    if not isinstance(tree, dict):
        raise ParamsError(f"{path}: the top level must be a mapping of sections")
    return tree


def validate_params(tree: dict[str, Any], source: str) -> Params:
    """A params tree as typed Params, or a ParamsError that names `source` and every bad key."""
    try:
        return Params.model_validate(tree)
    except ValidationError as exc:
        raise ParamsError(format_validation_error(source, exc)) from None


def load_params(path: str | Path = "params.yaml", overrides: list[str] | tuple[str, ...] = ()) -> Params:
    """Read a params file and apply `key.sub=value` overrides (values parsed as YAML)."""
    tree = read_yaml_mapping(path, "params", "pass --params FILE or run from the project folder")
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ParamsError(f"--set {override!r}: expected KEY=VALUE, e.g. --set select.prune_ratio=0.7")
        try:
            _set_dotted(tree, key.strip(), yaml.safe_load(raw))
        except yaml.YAMLError as exc:
            raise ParamsError(f"--set {override!r}: the value is not valid YAML ({' '.join(str(exc).split())}); quote it or fix it") from None
    return validate_params(tree, str(path))
