"""FINDINGS / IMPRESSION extraction from free-text radiology reports (MIMIC-CXR s<study>.txt)."""

from __future__ import annotations

import re

# A section header is an upper-case phrase at the start of a line followed by a colon ("FINDINGS:",
# "WET READ:", "FINDINGS AND IMPRESSION:").
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z ()/&,-]*[A-Z)]):", re.MULTILINE)


def clean_text(text: str) -> str:
    """Return text with all runs of whitespace collapsed to one space."""
    return " ".join(text.split())


def extract_sections(text: str) -> dict[str, str]:
    """Return {'findings': ..., 'impression': ...} from a report; a missing section is ''."""
    sections = {"findings": "", "impression": ""}
    headers = list(_HEADER.finditer(text))
    for k, match in enumerate(headers):
        end = headers[k + 1].start() if k + 1 < len(headers) else len(text)
        body = clean_text(text[match.end() : end])
        name = match.group(1).strip()
        if "FINDING" in name:
            key = "findings"
        elif "IMPRESSION" in name or "CONCLUSION" in name:
            key = "impression"
        else:
            continue
        sections[key] = f"{sections[key]} {body}".strip()
    return sections


def compose_report(sections: dict[str, str], use: tuple[str, ...] = ("findings", "impression")) -> str:
    """Return the chosen sections joined in order, each non-empty one once."""
    return " ".join(sections[name] for name in use if sections.get(name))
