"""Secrets kept out of every text mlprep writes: logs, terminals, notebooks, JSON files.

A secret leaks in more shapes than its plain text: escaped inside JSON or a Python repr,
HTML-escaped in a notebook's rich output, URL-encoded in a connection string, base64-encoded in
a header. ``forms`` lists those shapes; ``mask_text`` replaces each with ``***``;
``mask_value`` does so on the decoded strings of a JSON value (so an escaped copy inside a JSON
file is found as the plain secret it decodes to); ``StreamMasker`` masks text arriving in
pieces, holding back a tail that could be the start of a secret split across two writes.
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_LENGTH = 4  # shorter values would mask ordinary words


def _base64_cores(raw: bytes) -> list[str]:
    """The part of the base64 text of ``raw`` that stays the same wherever ``raw`` sits in a
    longer byte string (one for each of the three alignments)."""
    out = []
    for lead in range(3):
        padded = b"\0" * lead + raw
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            text = enc(padded).decode()
            # groups of 3 bytes -> 4 characters: drop the group shared with the bytes before
            # and a last partial group shared with the bytes after
            core = text[4 if lead else 0:(len(padded) // 3) * 4]
            if len(core) >= 6:
                out.append(core)
        if lead == 0:
            out.append(base64.b64encode(raw).decode())
    return out


def forms(secret: str) -> list[str]:
    """Every shape of ``secret`` worth masking, longest first (so a longer form wins)."""
    if len(secret) < MIN_LENGTH:
        return []
    raw = secret.encode()
    shapes = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
              repr(secret)[1:-1], html.escape(secret), html.escape(secret, quote=False),
              quote(secret, safe=""), quote_plus(secret), quote(secret), *_base64_cores(raw)}
    # a JSON-escaped form inside a JSON file read as text is escaped twice
    shapes |= {json.dumps(s)[1:-1] for s in list(shapes)}
    return sorted((s for s in shapes if len(s) >= MIN_LENGTH), key=len, reverse=True)


class Masker:
    """Masks a fixed set of secrets; build once, apply to many texts."""

    def __init__(self, secrets: list[str] | tuple[str, ...] | None) -> None:
        shapes = {f for s in (secrets or []) if s for f in forms(str(s))}
        self.shapes = sorted(shapes, key=len, reverse=True)
        self.longest = max((len(s) for s in self.shapes), default=0)

    def __bool__(self) -> bool:
        return bool(self.shapes)

    def text(self, text: str) -> str:
        for s in self.shapes:
            if s in text:
                text = text.replace(s, MASK)
        return text

    def value(self, obj: Any) -> Any:
        """A JSON-like value with every string (keys too) masked."""
        if not self.shapes:
            return obj
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {self.value(k) if isinstance(k, str) else k: self.value(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.value(v) for v in obj]
        return obj

    def held_tail(self, text: str) -> int:
        """Length of the longest end of ``text`` that begins some secret form."""
        for n in range(min(len(text), self.longest - 1), 0, -1):
            tail = text[-n:]
            if any(s.startswith(tail) for s in self.shapes):
                return n
        return 0


def mask_text(text: str, secrets: list[str]) -> str:
    return Masker(secrets).text(text)


def mask_value(obj: Any, secrets: list[str]) -> Any:
    return Masker(secrets).value(obj)


class StreamMasker:
    """Mask text written in pieces: ``feed`` returns what is safe to show now; ``flush`` the
    rest at the end. A secret printed in two writes is still caught."""

    def __init__(self, secrets: list[str]) -> None:
        self.masker = Masker(secrets)
        self.pending = ""

    def feed(self, text: str) -> str:
        if not self.masker:
            return text
        buf = self.masker.text(self.pending + text)
        keep = self.masker.held_tail(buf)
        self.pending = buf[len(buf) - keep:] if keep else ""
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        out, self.pending = self.masker.text(self.pending), ""
        return out
