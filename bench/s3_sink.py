"""A discard-everything S3 endpoint for benchmarks: the clients' own CPU becomes the limit.

`python bench/s3_sink.py PORT` serves HTTP/1.1 on 127.0.0.1:PORT. Bodies are counted and
dropped; every request gets the smallest answer an S3 client accepts: an ETag for PUT and
UploadPart, XML for CreateMultipartUpload / Complete / listings, and HEAD answers with the
size last PUT for that key (rclone checks it after an upload). `Expect: 100-continue` is
honoured (botocore sends it for large bodies). Chunked request bodies are not supported.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections import defaultdict
from email.utils import formatdate
from typing import cast

ETAG = '"sink-0000"'  # not an MD5: clients that compare MD5s then skip the comparison


class SinkProtocol(asyncio.Protocol):
    # Shared by every connection on purpose (class attributes): the sink's whole memory.
    sizes: dict[str, int] = {}  # noqa: RUF012 - see above
    uploaded: defaultdict[str, int] = defaultdict(int)  # noqa: RUF012 - see above

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.remaining = 0  # body bytes still to discard
        self.request: tuple[str, str, dict[str, str]] | None = None
        self.transport = cast(asyncio.Transport, None)  # set as soon as the connection is made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.request is not None and self.remaining:
                take = min(self.remaining, len(view))
                self.remaining -= take
                view = view[take:]
                if not self.remaining and self.request is not None:
                    self._answer(self.request)
                continue
            self.buffer += view
            view = memoryview(b"")
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            rest = bytes(self.buffer[end + 4 :])
            self.buffer.clear()
            lines = head.split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", ""):
                self._send(501, b"chunked bodies are not supported by the sink", close=True)
                return
            self.request = (method, target, headers)
            self.remaining = int(headers.get("content-length", "0") or 0)
            if self.remaining and headers.get("expect", "").lower() == "100-continue":
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if not self.remaining:
                self._answer(self.request)
            view = memoryview(rest)

    def _answer(self, request: tuple[str, str, dict[str, str]]) -> None:
        method, target, headers = request
        self.request = None
        path, _, query = target.partition("?")
        params = dict(p.partition("=")[::2] for p in query.split("&") if p)
        parts = path.strip("/").split("/", 1)
        key = parts[1] if len(parts) > 1 else ""
        xml = b'<?xml version="1.0" encoding="UTF-8"?>'
        if method == "PUT":
            length = int(headers.get("content-length", "0") or 0)
            if "partNumber" in params:
                # Remembered per upload, so HEAD after completion knows the object's size.
                self.uploaded[params.get("uploadId", "")] += length
            elif key:
                self.sizes[path] = length
            self._send(200, b"", {"ETag": ETAG})
        elif method == "POST" and "uploads" in params:
            upload = uuid.uuid4().hex
            body = (
                f"<InitiateMultipartUploadResult><Bucket>{parts[0]}</Bucket><Key>{key}</Key>"
                f"<UploadId>{upload}</UploadId></InitiateMultipartUploadResult>"
            )
            self._send(200, xml + body.encode(), {"Content-Type": "application/xml"})
        elif method == "POST" and "uploadId" in params:
            self.sizes[path] = self.uploaded.pop(params["uploadId"], 0)
            body = (
                f"<CompleteMultipartUploadResult><Bucket>{parts[0]}</Bucket><Key>{key}</Key>"
                f"<ETag>{ETAG}</ETag></CompleteMultipartUploadResult>"
            )
            self._send(200, xml + body.encode(), {"Content-Type": "application/xml"})
        elif method == "HEAD":
            if not key:
                self._send(200, b"")
            elif path in self.sizes:
                self._send(
                    200,
                    b"",
                    {"ETag": ETAG, "Last-Modified": formatdate(usegmt=True)},
                    length=self.sizes[path],
                )
            else:
                self._send(404, b"")
        elif method == "GET" and not key:
            # ListObjects(V2) / ListMultipartUploads on the bucket: nothing there.
            tag = "ListMultipartUploadsResult" if "uploads" in params else "ListBucketResult"
            body = f"<{tag}><Name>{parts[0]}</Name><IsTruncated>false</IsTruncated></{tag}>"
            self._send(200, xml + body.encode(), {"Content-Type": "application/xml"})
        elif method == "DELETE":
            self._send(204, b"")
        else:
            self._send(404, xml + b"<Error><Code>NoSuchKey</Code></Error>")

    def _send(
        self,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
        *,
        length: int | None = None,
        close: bool = False,
    ) -> None:
        reason = {200: "OK", 204: "No Content", 404: "Not Found", 501: "Not Implemented"}[status]
        lines = [f"HTTP/1.1 {status} {reason}", "x-amz-request-id: SINK"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if status != 204:
            lines.append(f"Content-Length: {len(body) if length is None else length}")
        if close:
            lines.append("Connection: close")
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        if close:
            self.transport.close()


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(SinkProtocol, "127.0.0.1", port, backlog=512)
    print(f"sink listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
