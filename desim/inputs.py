"""Reading what a user hands desim: config and experiment files, ``--set`` values, sample CSVs.

Every such input passes through here, so that none can hang desim, exhaust its memory or escape
as a traceback:

* only regular files are read (not ``/dev/zero``, a FIFO or a directory), of at most
  ``MAX_INPUT_BYTES``; the open does not block on a FIFO;
* text must be UTF-8 (a byte-order mark is allowed); a bad byte is reported with its line;
* YAML is read by a ``SafeLoader`` that refuses duplicate keys (a second ``machine:`` would
  silently replace the first), anchors, aliases and merge keys (an alias bomb expands to
  gigabytes from a few lines; desim configs never need them), and nesting deeper than
  ``MAX_DEPTH`` (the composer recurses once per level).

Errors are ``InputError``: one line, without the file name, which the caller puts in front.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent

MAX_INPUT_BYTES = 16 << 20
MAX_DEPTH = 64
_MERGE_TAG = "tag:yaml.org,2002:merge"


class InputError(ValueError):
    """An input cannot be read; the message is one line."""


def read_bytes(path: str | Path, limit: int = MAX_INPUT_BYTES) -> bytes:
    """The content of the regular file ``path``, refusing anything else or anything larger."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer for ever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError("not a regular file")
        if st.st_size > limit:
            raise InputError(f"too large ({st.st_size:,} bytes; at most {limit:,})")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limit + 1)  # the file may have grown since fstat
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise InputError(f"too large (more than {limit:,} bytes)")
    return data


def decode(data: bytes) -> str:
    """``data`` as UTF-8 text; a bad byte is named with its line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line})") from None
    return text.removeprefix("\ufeff")


def read_text(path: str | Path, limit: int = MAX_INPUT_BYTES) -> str:
    """The UTF-8 text of the regular file ``path`` (see ``read_bytes``)."""
    return decode(read_bytes(path, limit))


class _Refused(yaml.MarkedYAMLError):
    """YAML that is well-formed but that desim does not accept."""


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without duplicate keys, anchors, aliases, merge keys or deep nesting."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(
                None, None, "anchors and aliases (&name, *name) are not accepted", event.start_mark
            )
        if self._depth >= MAX_DEPTH:
            raise _Refused(None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    raise _Refused(
                        None, None, "merge keys (<<) are not accepted", key_node.start_mark
                    )
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first.get(key)
                except TypeError:
                    raise ConstructorError(
                        None,
                        None,
                        "a key must be a plain value, not a list or mapping",
                        key_node.start_mark,
                    ) from None
                if seen is not None:
                    raise _Refused(
                        None,
                        None,
                        f"duplicate key {key!r} (first at line {seen})",
                        key_node.start_mark,
                    )
                first[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """Parse one YAML document with ``StrictLoader``; any error is one ``InputError`` line."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except _Refused as exc:
        raise InputError(f"{_where(exc)}{exc.problem}") from None
    except yaml.MarkedYAMLError as exc:
        raise InputError(f"{_where(exc)}malformed YAML ({exc.problem})") from None
    except yaml.YAMLError as exc:  # ReaderError: a control character in the text
        raise InputError(f"malformed YAML ({' '.join(str(exc).split())})") from None
    except (ValueError, OverflowError) as exc:
        # a scalar YAML resolves to a type it cannot build: an int of >4300 digits, 2001-13-45
        raise InputError(f"malformed YAML value ({' '.join(str(exc).split())})") from None


def _where(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark
    return f"line {mark.line + 1}: " if mark is not None else ""
