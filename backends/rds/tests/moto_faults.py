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
- Multi-AZ and failover, held to RDS's published behaviour (moto makes
  every change at once, has no SecondaryAvailabilityZone and ignores
  ForceFailover). A transition lasts the next 3 DescribeDBInstances /
  DescribeDBClusters requests (FAULTS_DIR/cycle: another number), counted
  in the request filter below, so a test is deterministic and a waiting
  client must poll through it:
  - ModifyDBInstance `MultiAZ`: with `ApplyImmediately`, the instance is
    `modifying` with `PendingModifiedValues.MultiAZ` set and `MultiAZ`
    unchanged; then `MultiAZ` flips and a Multi-AZ instance reports a
    `SecondaryAvailabilityZone` (another AZ of its region). Without
    `ApplyImmediately` the change stays pending (the maintenance window
    never comes here). Asking for the Multi-AZ setting the instance
    already has, with nothing else, is refused as RDS does
    (InvalidParameterCombination "No modifications were requested").
  - RebootDBInstance: refused unless the instance is `available`
    (InvalidDBInstanceState); `ForceFailover=true` on an instance that is
    not Multi-AZ is refused (InvalidParameterCombination: "You can't
    enable force failover if the instance isn't configured for
    Multi-AZ"); otherwise the instance is `rebooting`, and with
    ForceFailover its AvailabilityZone and SecondaryAvailabilityZone swap
    when the reboot ends (the standby became the primary).
  - FailoverDBCluster (moto swaps the writer flag at once and checks
    little): refused unless the cluster is `available`
    (InvalidDBClusterStateFault), the target is a member of that cluster
    (InvalidParameterValue; moto accepts any instance of any cluster) and
    `available` (InvalidDBInstanceState, RDS's code; moto answers
    `InvalidDBInstanceStateFault`). The target becomes the writer at once
    (as in moto); the cluster is `failing-over` and both the old and the
    new writer `rebooting` for the cycle. Each failover is logged to
    FAULTS_DIR/failovers.log as `<cluster> <old writer> <new writer>`.
- FAULTS_DIR/throttle-<Action>: as `throttle`, for that action only (to
  throttle one call in the middle of a sequence, e.g. RebootDBInstance).
"""

import os
import sys
import threading
import uuid
from urllib.parse import parse_qs

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.core.responses import ActionResult
from moto.rds.exceptions import DBClusterNotFoundError, RDSClientError
from moto.rds.models import DBCluster, DBInstance, RDSBackend
from moto.rds.responses import RDSResponse

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
    during = _transition(self)
    if during is not None:
        return during
    return STATUS.get(id(self), "available")


def _status_set(self, value):
    # Kept outside the instance's __dict__: moto copies that dict into
    # instances restored from a snapshot.
    STATUS[id(self)] = value


# Transitions (see the module doc): by id() of the moto object, which the
# entry keeps alive so the id is not reused. Outside the objects'
# __dict__, which moto copies into restored instances.
CYCLE = 3
DESCRIBES = [0]
TLOCK = threading.RLock()
TRANSITIONS = {}
EXTRA = {}


def _extra(obj):
    with TLOCK:
        return EXTRA.setdefault(id(obj), (obj, {}))[1]


def _cycle():
    try:
        with open(os.path.join(FAULTS, "cycle")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return CYCLE


def _start(obj, status, done=None):
    with TLOCK:
        TRANSITIONS[id(obj)] = (obj, status, DESCRIBES[0] + _cycle(), done)


def _transition(obj):
    """The state `obj` shows while a transition runs (None: none runs);
    a transition that is due is finished here, on the first read after."""
    with TLOCK:
        t = TRANSITIONS.get(id(obj))
        if t is None:
            return None
        _, status, until, done = t
        if DESCRIBES[0] < until:
            return status
        del TRANSITIONS[id(obj)]
        if done is not None:
            done()
        return None


def _other_az(az):
    return az[:-1] + ("b" if az.endswith("a") else "a")


def _secondary_az(self):
    if not self.multi_az or getattr(self, "db_cluster_identifier", None):
        return None
    _transition(self)
    extra = _extra(self)
    if "secondary_az" not in extra:
        extra["secondary_az"] = _other_az(self.availability_zone)
    return extra["secondary_az"]


def _pending_modified_values(self):
    _transition(self)
    pending = _extra(self).get("pending_multi_az")
    if pending is None:
        return None
    return {"MultiAZ": pending}


DBInstance.status = property(_status_get, _status_set)
DBInstance.secondary_availability_zone = property(_secondary_az)
DBInstance.pending_modified_values = property(_pending_modified_values)

_cluster_status = DBCluster.status


def _cluster_status_get(self):
    during = _transition(self)
    if during is not None:
        return during
    return _cluster_status.fget(self)


DBCluster.status = property(_cluster_status_get, _cluster_status.fset)


def _flag(value):
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)


_modify = RDSBackend.modify_db_instance


def _modify_db_instance(self, db_instance_identifier, db_kwargs):
    if db_kwargs.get("multi_az") is None:
        return _modify(self, db_instance_identifier, db_kwargs)
    database = self.describe_db_instances(db_instance_identifier)[0]
    wanted = _flag(db_kwargs.pop("multi_az"))
    immediately = _flag(db_kwargs.get("apply_immediately"))
    others = [
        k for k in db_kwargs if k not in ("db_instance_identifier", "apply_immediately")
    ]
    extra = _extra(database)
    pending = extra.get("pending_multi_az")
    if wanted == bool(database.multi_az) and pending is None and not others:
        raise RDSClientError("InvalidParameterCombination", "No modifications were requested")
    if database.status != "available":
        raise RDSClientError(
            "InvalidDBInstanceState",
            f"Instance {database.db_instance_identifier} is not in available state.",
        )
    if others:
        database = _modify(self, db_instance_identifier, db_kwargs)
    if wanted == bool(database.multi_az):
        extra.pop("pending_multi_az", None)
        return database
    extra["pending_multi_az"] = wanted
    if immediately:

        def done():
            database.multi_az = wanted
            extra.pop("pending_multi_az", None)
            extra.pop("secondary_az", None)

        _start(database, "modifying", done)
    return database


RDSBackend.modify_db_instance = _modify_db_instance


def _reboot_db_instance(self):
    identifier = self.params.get("DBInstanceIdentifier")
    database = self.backend.describe_db_instances(identifier)[0]
    force = _flag(self.params.get("ForceFailover"))
    if database.status != "available":
        raise RDSClientError(
            "InvalidDBInstanceState",
            f"Instance {database.db_instance_identifier} is not in available state.",
        )
    if force and not database.multi_az:
        raise RDSClientError(
            "InvalidParameterCombination",
            "You can't enable force failover if the instance isn't configured for Multi-AZ.",
        )

    def done():
        if force:
            secondary = _secondary_az(database)
            _extra(database)["secondary_az"] = database.availability_zone
            database.availability_zone = secondary

    _start(database, "rebooting", done)
    return ActionResult({"DBInstance": database})


RDSResponse.reboot_db_instance = _reboot_db_instance

_failover = RDSBackend.failover_db_cluster


def _failover_db_cluster(self, db_cluster_identifier, target_db_instance_identifier=None):
    if db_cluster_identifier not in self.clusters:
        raise DBClusterNotFoundError(db_cluster_identifier)
    cluster = self.clusters[db_cluster_identifier]
    if cluster.status != "available":
        raise RDSClientError(
            "InvalidDBClusterStateFault",
            f"DbCluster {db_cluster_identifier} is not in a valid state (status {cluster.status}).",
        )
    old = cluster.writer
    if target_db_instance_identifier is not None:
        members = {m.db_instance_identifier: m for m in cluster.members}
        target = members.get(target_db_instance_identifier.lower())
        if target is None:
            raise RDSClientError(
                "InvalidParameterValue",
                f"Instance {target_db_instance_identifier} is not a member of DB cluster {db_cluster_identifier}.",
            )
        if target.status != "available":
            raise RDSClientError(
                "InvalidDBInstanceState",
                f"Instance {target_db_instance_identifier} is not in available state.",
            )
    cluster = _failover(self, db_cluster_identifier, target_db_instance_identifier)
    new = cluster.writer
    _start(cluster, "failing-over")
    for member in (old, new):
        if member is not None:
            _start(member, "rebooting")
    with LOCK:
        with open(os.path.join(FAULTS, "failovers.log"), "a") as f:
            f.write(
                f"{cluster.db_cluster_identifier} "
                f"{old.db_instance_identifier if old else '-'} "
                f"{new.db_instance_identifier if new else '-'}\n"
            )
    return cluster


RDSBackend.failover_db_cluster = _failover_db_cluster

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


def _take_throttle(name):
    path = os.path.join(FAULTS, name)
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
            if action in ("DescribeDBInstances", "DescribeDBClusters"):
                with TLOCK:
                    DESCRIBES[0] += 1
            if _take_throttle("throttle") or _take_throttle(f"throttle-{action}"):
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
