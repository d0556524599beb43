"""Where a suite's problems are, for a person fixing the file: each problem's YAML line, the method an
entry of ``methods`` names (``methods.2 (snl).options.lr, line 34``) and, for a field the schema does
not know, the known fields nearest to it ("did you mean …")."""
from __future__ import annotations

import difflib
import types
import typing

import yaml
from pydantic import BaseModel

Loc = tuple[str | int, ...]


def yaml_lines(text: str) -> dict[Loc, int]:
    """The 1-based line of every key and list item of a YAML document, by its path."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[Loc, int] = {}

    def walk(node, path: Loc) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                here = path + (key.value,)
                lines[here] = key.start_mark.line + 1
                walk(value, here)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[path + (i,)] = item.start_mark.line + 1
                walk(item, path + (i,))

    walk(root, ())
    return lines


def _models(annotation) -> list[type[BaseModel]]:
    """The pydantic models an annotation admits (through Optional, unions, lists and dicts)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list, dict):
        return [m for arg in typing.get_args(annotation) for m in _models(arg)]
    return []


def fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """The field names of the model that holds ``loc``'s last part (none where the path leaves the models)."""
    current = [model]
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        current = [m for cls in current if part in cls.model_fields for m in _models(cls.model_fields[part].annotation)]
        if not current:
            return []
    return sorted({name for cls in current for name in cls.model_fields})


def did_you_mean(unknown: str, known: list[str]) -> str:
    near = difflib.get_close_matches(unknown, known, n=2, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""


def parse_loc(text: str) -> Loc:
    return tuple(int(p) if p.isdigit() else p for p in text.split("."))


def located(problem: str, lines: dict[Loc, int], raw: object) -> str:
    """``problem`` ("methods.2.options.x: message") as "methods.2 (snl).options.x, line 34: message": the
    method's name after its index, and the line of the nearest part of its path that the file has."""
    head, sep, message = problem.partition(": ")
    if not sep or " " in head:
        return problem
    loc = parse_loc(head)
    shown = []
    for i, part in enumerate(loc):
        shown.append(str(part))
        if i == 1 and loc[0] == "methods" and isinstance(part, int):
            entries = raw.get("methods") if isinstance(raw, dict) else None
            if isinstance(entries, list) and part < len(entries) and isinstance(entries[part], dict) \
                    and isinstance(entries[part].get("name"), str):
                shown[-1] += f" ({entries[part]['name']})"
    line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
    return f"{'.'.join(shown)}{f', line {line}' if line else ''}: {message}"
