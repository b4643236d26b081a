"""Reading a YAML file that someone else may have written: bounded, strict, one-line errors.

PyYAML's ``safe_load`` builds no objects but plain data, yet it still lets a file
* be any size (a 10 MB scenario took 90 s and 1 GB to validate),
* expand aliases without bound (a 400-byte "billion laughs" file became 11.8 MB of
  output from ``validate --print``),
* repeat a key, the second silently replacing the first (a second ``stage1:`` replaced the
  whole section), and
* be binary (a ``UnicodeDecodeError`` traceback).
:func:`read_yaml_file` rejects each before any value is built, naming the file, and for a
repeated key the key's path and both lines. :mod:`nmoe_sim.config` is its only caller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from nmoe_sim.errors import ConfigError

MAX_FILE_BYTES = 1_000_000
# Values (YAML nodes) of the document with every alias expanded. A shipped scenario has a
# few hundred; a 1,000-client explicit topology about 3,000.
MAX_EXPANDED_NODES = 100_000


def _expanded_size(root: Node, path: Path | str) -> int:
    """Node count of the document with aliases expanded, in time linear in the node graph.

    An alias is the same Node object met again, so a memo by identity counts a shared
    subtree once per reference without walking it again; a node met inside itself is a
    recursive alias, which no scenario needs.
    """
    memo: dict[int, int] = {}
    active: set[int] = set()
    # Iterative post-order: a deep nesting must not hit Python's recursion limit.
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            active.discard(key)
            memo[key] = 1 + sum(memo[id(c)] for c in _children(node))
            if memo[key] > MAX_EXPANDED_NODES:
                raise ConfigError(f"{path}: holds more than {MAX_EXPANDED_NODES:,} values once YAML "
                                  "aliases are expanded; a scenario needs far fewer")
            continue
        if key in memo:
            continue
        if key in active:
            line = node.start_mark.line + 1
            raise ConfigError(f"{path}: line {line}: a YAML alias refers to a node that contains it "
                              "(recursive data is not a scenario)")
        active.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in memo)
    return memo[id(root)]


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_duplicate_keys(root: Node, path: Path | str) -> None:
    """A key given twice in one mapping is an error naming its path and both lines."""
    seen_nodes: set[int] = set()
    stack: list[tuple[Node, str]] = [(root, "")]
    while stack:
        node, where = stack.pop()
        if id(node) in seen_nodes:  # an alias: checked where it was defined
            continue
        seen_nodes.add(id(node))
        if isinstance(node, SequenceNode):
            stack.extend((c, f"{where}[{i}]") for i, c in enumerate(node.value))
        elif isinstance(node, MappingNode):
            first_line: dict[str, int] = {}
            for key_node, value_node in node.value:
                name = str(key_node.value) if isinstance(key_node, ScalarNode) else "?"
                key_path = f"{where}.{name}" if where else name
                if isinstance(key_node, ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    line = key_node.start_mark.line + 1
                    if name in first_line:
                        raise ConfigError(f"{path}: line {line}: duplicate key {key_path} "
                                          f"(first given on line {first_line[name]}); give each key once")
                    first_line[name] = line
                stack.append((value_node, key_path))


def parse_yaml_text(text: str, path: Path | str) -> Any:
    """Parse one YAML document from ``text`` with the checks above; ``path`` names where the
    text came from (a file, or ``--set KEY``) in error messages."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # its reader already rejects non-printable characters
        root = loader.get_single_node()
        if root is None:
            return None
        _expanded_size(root, path)
        _check_duplicate_keys(root, path)
        return loader.construct_document(root)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where} invalid YAML ({problem})") from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply to be a scenario") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml_file(path: Path, what: str) -> Any:
    """The data of the YAML file at ``path`` (None for an empty one); ``what`` names the
    config key or role of the file for a missing-file error."""
    if not path.is_file():
        raise ConfigError(f"{what}: file not found: {path}")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: {size:,} bytes is larger than a scenario may be "
                              f"({MAX_FILE_BYTES:,} bytes)")
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (undecodable byte at offset {exc.start}); "
                          "a scenario is YAML text") from None
    return parse_yaml_text(text, path)
