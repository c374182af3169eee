"""Reading the XML answers of S3 and STS: namespaces ignored, missing elements empty."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator

ParseError = ET.ParseError
Element = ET.Element


def parse(body: bytes) -> ET.Element:
    """An answer of the configured endpoint. ElementTree never fetches external
    entities and the bundled expat (>= 2.4) bounds entity expansion."""
    return ET.fromstring(body)  # noqa: S314 - see the docstring


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def child(element: ET.Element, name: str) -> str:
    """The text of ``element``'s first child called ``name`` ("" if none)."""
    for sub in element:
        if local(sub.tag) == name:
            return sub.text or ""
    return ""


def children(element: ET.Element, name: str) -> Iterator[ET.Element]:
    return (sub for sub in element if local(sub.tag) == name)


def find(root: ET.Element, name: str) -> str:
    """The stripped text of the first element called ``name`` anywhere under ``root``."""
    for element in root.iter():
        if local(element.tag) == name:
            return (element.text or "").strip()
    return ""
