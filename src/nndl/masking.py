"""Secrets never reach a file or the terminal: one function masks them in any text nndl writes or prints."""
from __future__ import annotations

import re


def mask_secrets(text: str | None) -> str | None:
    """Hide passwords in URLs and DSNs: ``scheme://user:secret@host`` -> ``scheme://user:***@host``,
    ``password=secret`` -> ``password=***``. Any string is safe to pass; ``None`` stays ``None``."""
    if not text:
        return text
    text = re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1:***@", text)
    return re.sub(r"((?:password|passwd|pwd)=)[^&\s;]*", r"\1***", text, flags=re.IGNORECASE)
