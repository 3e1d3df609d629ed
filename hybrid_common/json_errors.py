"""What `json.loads` raises on text that is not JSON it can hold, for callers reading untrusted
bodies and files (S3 objects, SQS messages, files an operator points at).

Not only JSONDecodeError: a plain ValueError for bad UTF-8 and for an integer past Python's
4,300-digit limit, and RecursionError for nesting deeper than the interpreter's stack — each
of which a hostile document can ask for. (An integer too large for a float parses; converting
it raises OverflowError, which the readers that convert handle themselves.)
"""

from __future__ import annotations

NOT_JSON: tuple[type[Exception], ...] = (ValueError, RecursionError)
