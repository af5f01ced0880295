"""moto's RDS in server mode, with faults a test can switch on through files.

Usage: python3 moto_faults.py PORT FAULTS_DIR

moto itself is unchanged; this launcher only adds what moto cannot be asked
for through the API, so the plugin's handling of real RDS behaviour can be
tested:

- FAULTS_DIR/status/<DBInstanceIdentifier>: while this file exists, moto
  reports the instance in the state the file holds (for example
  `modifying`, to test an instance stuck in a long modification). moto
  itself otherwise makes every change at once.
- FAULTS_DIR/throttle: holds a number N; the next N API requests are
  answered with RDS's `Throttling` error (HTTP 400), as AWS does under
  load. The number counts down; the file is removed at 0.
- moto's credential check (`INITIAL_NO_AUTH_ACTION_COUNT`) answers in the
  EC2 shape (`<Errors><Error>`); RDS (awsQuery) answers
  `<ErrorResponse><Error>`, which is what the SDK parses: rewritten.
- FAULTS_DIR/requests.log: one line per API request, `Action` only
  (never parameters: they can hold passwords).
- RestoreDBClusterToPointInTime, held to RDS's published API where moto
  accepts anything: `RestoreToTime` with `RestoreType=copy-on-write`, or
  with `UseLatestRestorableTime`, or neither of them, or a time outside
  the source's restorable window, is refused (InvalidParameterCombination /
  InvalidRestoreFault); a copy-on-write clone gets the `CloneGroupId` RDS
  reports (shared with its source), which moto leaves out. Each restore is
  logged to FAULTS_DIR/restores.log as `<source> <new> <RestoreType>
  <latest|ISO time>` (no secrets in these parameters).
- DeleteDBCluster removes the cluster's automated snapshots, as RDS does
  by default (`DeleteAutomatedBackups`); moto keeps them, and its
  automated snapshot names (`rds:<cluster>-<minute>`) then collide when a
  cluster of the same name is made again within the minute.
"""

import os
import sys
import threading
import uuid
from urllib.parse import parse_qs

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.rds.exceptions import RDSClientError
from moto.rds.models import DBInstance, RDSBackend

PORT = int(sys.argv[1])
FAULTS = sys.argv[2]
LOCK = threading.Lock()
STATUS = {}

os.environ.setdefault("MOTO_PORT", str(PORT))


def _status_get(self):
    path = os.path.join(FAULTS, "status", self.db_instance_identifier)
    try:
        with open(path) as f:
            forced = f.read().strip()
        if forced:
            return forced
    except OSError:
        pass
    return STATUS.get(id(self), "available")


def _status_set(self, value):
    # Kept outside the instance's __dict__: moto copies that dict into
    # instances restored from a snapshot.
    STATUS[id(self)] = value


DBInstance.status = property(_status_get, _status_set)

_restore_pit = RDSBackend.restore_db_cluster_to_point_in_time


def _restore_db_cluster_to_point_in_time(
    self,
    db_cluster_identifier,
    source_db_cluster_identifier,
    restore_type="full-copy",
    restore_to_time=None,
    use_latest_restorable_time=False,
    **overrides,
):
    if restore_to_time is not None and restore_type == "copy-on-write":
        raise RDSClientError(
            "InvalidParameterCombination",
            "RestoreToTime can't be specified if the RestoreType parameter is copy-on-write",
        )
    if restore_to_time is not None and use_latest_restorable_time:
        raise RDSClientError(
            "InvalidParameterCombination",
            "Cannot specify both RestoreToTime and UseLatestRestorableTime",
        )
    if restore_to_time is None and not use_latest_restorable_time:
        raise RDSClientError(
            "InvalidParameterValue",
            "RestoreToTime must be specified if UseLatestRestorableTime isn't",
        )
    source = self.describe_db_clusters(db_cluster_identifier=source_db_cluster_identifier)[0]
    if restore_to_time is not None:
        at = restore_to_time.replace(tzinfo=None)
        earliest = source.earliest_restorable_time.replace(tzinfo=None)
        latest = source.latest_restorable_time.replace(tzinfo=None)
        if not earliest <= at <= latest:
            raise RDSClientError(
                "InvalidRestoreFault",
                f"The requested restore time {at.isoformat()}Z is outside the restorable window "
                f"{earliest.isoformat()}Z .. {latest.isoformat()}Z of {source_db_cluster_identifier}",
            )
    cluster = _restore_pit(
        self,
        db_cluster_identifier,
        source_db_cluster_identifier,
        restore_type,
        restore_to_time,
        use_latest_restorable_time,
        **overrides,
    )
    if restore_type == "copy-on-write":
        group = getattr(source, "clone_group_id", None) or str(uuid.uuid4())
        source.clone_group_id = group
        cluster.clone_group_id = group
    when = "latest" if restore_to_time is None else restore_to_time.isoformat()
    with LOCK:
        with open(os.path.join(FAULTS, "restores.log"), "a") as f:
            f.write(f"{source.db_cluster_identifier} {cluster.db_cluster_identifier} {restore_type} {when}\n")
    return cluster


RDSBackend.restore_db_cluster_to_point_in_time = _restore_db_cluster_to_point_in_time

_delete_cluster = RDSBackend.delete_db_cluster


def _delete_db_cluster(self, cluster_identifier, snapshot_name=None):
    cluster = _delete_cluster(self, cluster_identifier, snapshot_name)
    for sid, snap in list(self.cluster_snapshots.items()):
        if (
            snap.snapshot_type == "automated"
            and snap.db_cluster_identifier == cluster.db_cluster_identifier
        ):
            del self.cluster_snapshots[sid]
    return cluster


RDSBackend.delete_db_cluster = _delete_db_cluster

THROTTLED = (
    b'<ErrorResponse xmlns="http://rds.amazonaws.com/doc/2014-10-31/">'
    b"<Error><Type>Sender</Type><Code>Throttling</Code>"
    b"<Message>Rate exceeded</Message></Error>"
    b"<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
)


def _take_throttle():
    path = os.path.join(FAULTS, "throttle")
    with LOCK:
        try:
            with open(path) as f:
                n = int(f.read().strip() or "0")
        except (OSError, ValueError):
            return False
        if n <= 0:
            os.remove(path)
            return False
        with open(path, "w") as f:
            f.write(str(n - 1))
        return True


class Faults:
    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") == "POST" and not environ.get(
            "PATH_INFO", ""
        ).startswith("/moto-api"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length)
            import io

            environ["wsgi.input"] = io.BytesIO(body)
            action = parse_qs(body.decode("utf-8", "replace")).get("Action", ["?"])[0]
            with LOCK:
                with open(os.path.join(FAULTS, "requests.log"), "a") as f:
                    f.write(action + "\n")
            if _take_throttle():
                start_response(
                    "400 Bad Request",
                    [("Content-Type", "text/xml"), ("Content-Length", str(len(THROTTLED)))],
                )
                return [THROTTLED]
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"] = status
            captured["headers"] = headers
            return lambda data: None

        body = b"".join(self.app(environ, capture))
        if body.find(b"<Errors><Error>") != -1:
            body = body.replace(b"<Errors><Error>", b"<Error>").replace(
                b"</Error></Errors>", b"</Error>"
            )
            captured["headers"] = [
                (k, str(len(body)) if k.lower() == "content-length" else v)
                for k, v in captured["headers"]
            ]
        start_response(captured["status"], captured["headers"])
        return [body]


os.makedirs(os.path.join(FAULTS, "status"), exist_ok=True)
app = DomainDispatcherApplication(create_backend_app)
run_simple("127.0.0.1", PORT, Faults(app), threaded=True)
