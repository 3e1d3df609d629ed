"""The students directory: one DynamoDB BatchGetItem per video, cached in the warm container.

The table is keyed by `name` (S); items carry `major` and `year`. A recognised name that the
table does not hold is still reported, with empty major/year, and logged as a warning: the
person was seen, only their record is missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from hybrid_common.logs import get_logger
from hybrid_common.students import TABLE_KEY, TABLE_KEY_TYPE

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import KeysAndAttributesTypeDef

log = get_logger(__name__)

# DynamoDB's limit of keys per BatchGetItem request.
BATCH_LIMIT = 100
# UnprocessedKeys come back when the table is throttled: retry them with backoff, then give up
# (the caller treats that as an infrastructure error, so Lambda retries the whole record).
MAX_UNPROCESSED_ROUNDS = 6
BACKOFF_BASE_S = 0.05


class DirectoryUnavailable(RuntimeError):
    """The table kept returning unprocessed keys; a retry later may succeed."""


@dataclass(frozen=True, slots=True)
class Student:
    """A person's row; `found` is False when the table has no item for the name."""

    name: str
    major: str = ""
    year: str = ""
    found: bool = True


class StudentDirectory:
    """Looks names up in the students table; answers (found or not) are reused for `ttl_s`."""

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        *,
        ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._table = table
        self._ttl_s = ttl_s
        self._clock = clock
        self._sleep = sleep
        self._cache: dict[str, tuple[float, Student]] = {}
        self.requests = 0  # BatchGetItem calls made, for logs and tests

    def lookup(self, names: Iterable[str]) -> dict[str, Student]:
        """Every requested name mapped to its Student (missing ones with found=False)."""
        wanted = list(dict.fromkeys(names))
        now = self._clock()
        result: dict[str, Student] = {}
        misses: list[str] = []
        for name in wanted:
            cached = self._cache.get(name)
            if cached is not None and cached[0] > now:
                result[name] = cached[1]
            else:
                misses.append(name)
        if misses:
            fetched = self._fetch(misses)
            expires = self._clock() + self._ttl_s
            for name in misses:
                student = fetched.get(name) or Student(name=name, found=False)
                if not student.found:
                    log.warning("student.missing", name=name, table=self._table)
                if self._ttl_s > 0:
                    self._cache[name] = (expires, student)
                result[name] = student
        return {name: result[name] for name in wanted}

    def _fetch(self, names: list[str]) -> dict[str, Student]:
        found: dict[str, Student] = {}
        for start in range(0, len(names), BATCH_LIMIT):
            chunk = names[start : start + BATCH_LIMIT]
            request: dict[str, KeysAndAttributesTypeDef] = {
                self._table: {
                    "Keys": [{TABLE_KEY: {TABLE_KEY_TYPE: name}} for name in chunk],
                    # `year` is a reserved word in DynamoDB expressions.
                    "ProjectionExpression": "#n, major, #y",
                    "ExpressionAttributeNames": {"#n": TABLE_KEY, "#y": "year"},
                }
            }
            for round_ in range(MAX_UNPROCESSED_ROUNDS):
                self.requests += 1
                response = self._client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self._table, []):
                    student = _student(item)
                    found[student.name] = student
                pending = response.get("UnprocessedKeys", {}).get(self._table)
                if pending is None or not pending.get("Keys"):
                    break
                # The output shape of unprocessed keys is a valid request as it stands.
                request = {self._table: cast("KeysAndAttributesTypeDef", pending)}
                log.info("student.unprocessed", keys=len(pending["Keys"]))
                self._sleep(BACKOFF_BASE_S * 2**round_)
            else:
                raise DirectoryUnavailable(
                    f"table {self._table} left keys unprocessed after "
                    f"{MAX_UNPROCESSED_ROUNDS} attempts"
                )
        return found

    def clear(self) -> None:
        """Forget cached answers (e.g. after the table was reloaded)."""
        self._cache.clear()


def _student(item: Mapping[str, Any]) -> Student:
    return Student(
        name=_plain(item.get(TABLE_KEY)),
        major=_plain(item.get("major")),
        year=_plain(item.get("year")),
    )


def _plain(value: Any) -> str:
    """A DynamoDB attribute value as text: strings as they are, numbers as their digits."""
    if not isinstance(value, Mapping):
        return ""
    for kind in ("S", "N"):
        if kind in value:
            return str(value[kind])
    return ""
