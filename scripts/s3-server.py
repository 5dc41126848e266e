#!/usr/bin/env python3
"""An S3-compatible server for Lethe's tests and benchmarks: moto's S3 on
loopback, HTTP/1.1 with keep-alive, and one addition for seeding test data.

    s3-server.py PORT

POST /_lethe/seed with a JSON body
    {"bucket": "b", "objects": [{"key": "k", "lastModified": 1700000000,
      "metadata": {"user_id": "7"}, "body": "x"}]}
stores each object through moto's own backend (versions, Object Lock and
all) and sets its LastModified, as data written long ago would have: a
real S3 API cannot, and tests of retention need old objects. Everything
else is plain S3, which is all Lethe itself ever speaks.
"""

import datetime
import json
import sys

from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.s3.models import s3_backends
from werkzeug.serving import WSGIRequestHandler, run_simple

s3 = DomainDispatcherApplication(create_backend_app)


def seed(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    req = json.loads(environ["wsgi.input"].read(length))
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    versions = []
    for o in req["objects"]:
        key = backend.put_object(req["bucket"], o["key"], o.get("body", "x").encode())
        if "metadata" in o:
            key.set_metadata({f"x-amz-meta-{k}": v for k, v in o["metadata"].items()})
        if "lastModified" in o:
            key.last_modified = datetime.datetime.fromtimestamp(o["lastModified"], datetime.timezone.utc).replace(
                tzinfo=None
            )
        versions.append(key.version_id)
    body = json.dumps({"versions": versions}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/_lethe/seed":
        return seed(environ, start_response)
    return s3(environ, start_response)


if __name__ == "__main__":
    WSGIRequestHandler.protocol_version = "HTTP/1.1"
    run_simple("127.0.0.1", int(sys.argv[1]), app, threaded=True)
