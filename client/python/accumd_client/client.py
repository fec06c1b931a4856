"""Client: one channel to accumd and one method per accumctl verb.

Mirrors client/connection.cpp and client/commands.cpp: the server defaults to
$ACCUMD_SERVER or 127.0.0.1:7070, the token file to $ACCUMD_TOKEN_FILE; the token
travels as `authorization: Bearer <token>` metadata; unary calls have a 30 s
deadline (checkpoint: 600 s), streams none. Every failed call raises AccumdError
with the gRPC status code and accumd's message.

Thread safety: a Client may be shared by threads (gRPC channels are thread-safe).
"""
import os
import time

import grpc

from accum.v1 import accum_pb2, accum_pb2_grpc
from accumd_client.errors import AccumdError
from accumd_client.spec import load_spec, parse_spec

TERMINAL_STATES = frozenset({accum_pb2.SUCCEEDED, accum_pb2.FAILED, accum_pb2.CANCELLED})


class Client:
    def __init__(self, server=None, token=None, token_file=None, tls_ca=None, timeout=30.0,
                 keepalive_s=20.0, keepalive_timeout_s=10.0):
        """Opens a channel (connecting lazily, as gRPC does).

        server: "HOST:PORT". token or token_file: the bearer token accumd was started
        with (--token-file). tls_ca: PEM file of the CA that signed accumd's
        certificate; turns TLS on. keepalive_s, keepalive_timeout_s: while a call is
        open (watch, logs with follow, wait), ping accumd after keepalive_s seconds of
        quiet and give the call up (UNAVAILABLE, "stopped answering") when a ping is not
        answered within keepalive_timeout_s, as accumctl's --keepalive-s and
        --keepalive-timeout-s do: an accumd that hangs, or whose host is gone, does not
        hold a watch forever. Raises AccumdError(INVALID_ARGUMENT) when a token or CA
        file cannot be read, or a keepalive time is not positive.
        """
        self.server = server or os.environ.get("ACCUMD_SERVER", "127.0.0.1:7070")
        token_file = token_file or (None if token else os.environ.get("ACCUMD_TOKEN_FILE"))
        if token_file:
            token = _read_text(token_file, "token_file").strip()
            if not token:
                raise AccumdError(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"token_file {token_file}: cannot read a token from it")
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._tls = bool(tls_ca)
        self._timeout = timeout
        for name, value in (("keepalive_s", keepalive_s),
                            ("keepalive_timeout_s", keepalive_timeout_s)):
            if not isinstance(value, (int, float)) or not 0 < value <= 3600:
                raise AccumdError(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"{name}: expected seconds in (0, 3600], got {value!r}")
        self._keepalive_timeout_s = keepalive_timeout_s
        # A watch waiting out an accumd restart reconnects within 2 s of accumd listening
        # again (gRPC's default backoff grows to 120 s).
        options = [("grpc.initial_reconnect_backoff_ms", 200),
                   ("grpc.max_reconnect_backoff_ms", 2000),
                   # As much as accumd sends (many jobs with their specs), not gRPC's 4 MiB.
                   ("grpc.max_receive_message_length", 64 << 20),
                   ("grpc.keepalive_time_ms", int(keepalive_s * 1000)),
                   ("grpc.keepalive_timeout_ms", int(keepalive_timeout_s * 1000)),
                   # Pings go on however long a stream has been quiet (gRPC stops after
                   # two without data of our own by default; accumd permits them).
                   ("grpc.http2.max_pings_without_data", 0)]
        if tls_ca:
            pem = _read_text(tls_ca, "tls_ca").encode()
            self._channel = grpc.secure_channel(self.server, grpc.ssl_channel_credentials(pem),
                                                options=options)
        else:
            self._channel = grpc.insecure_channel(self.server, options=options)
        self._stub = accum_pb2_grpc.ControlStub(self._channel)

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- the verbs ------------------------------------------------------------

    def submit(self, spec, spec_dir=None):
        """Queues a job; returns its JobStatus (`.id` is "job-000001").

        spec: a path to a spec file (relative paths in it resolve against the file's
        folder, as with `accumctl submit`), or a dict / JobSpec (they resolve against
        spec_dir, default the current directory). A spec that is not a JobSpec raises
        SpecError, one accumd refuses AccumdError; both have code INVALID_ARGUMENT.
        """
        if isinstance(spec, (str, os.PathLike)):
            path = os.fspath(spec)
            message = load_spec(path)
            spec_dir = spec_dir or os.path.dirname(os.path.abspath(path))
        else:
            message = parse_spec(spec)
        request = accum_pb2.SubmitJobRequest(spec=message,
                                             spec_dir=os.path.abspath(spec_dir or os.getcwd()))
        return self._unary(self._stub.SubmitJob, request).job

    def get(self, job_id):
        """The JobStatus of a job: state, spec, last metrics, restarts, history."""
        return self._unary(self._stub.GetJob, accum_pb2.GetJobRequest(id=job_id))

    def list(self, states=()):
        """All jobs (or those in `states`, JobState values or names in any case, as
        `accumctl list --state running` takes them) in id order. An unknown name raises
        AccumdError(INVALID_ARGUMENT) naming the states there are."""
        request = accum_pb2.ListJobsRequest(states=[_job_state(s) for s in states], page_size=500)
        jobs = []
        while True:
            response = self._unary(self._stub.ListJobs, request)
            jobs.extend(response.jobs)
            if not response.next_page_token:
                return jobs
            request.page_token = response.next_page_token

    def watch(self, job_id, reconnect_s=60.0):
        """Yields JobEvents (`event.status` or `event.metrics`, see WhichOneof("event")):
        the current status, the metrics so far, then live events; ends when the job
        ends, with its final status. (A job that has already ended: its metrics, then
        its final status.)

        If accumd goes away once the watch has begun (a restart: the job trains on),
        waits up to `reconnect_s` seconds for it, re-opens the watch and yields only
        what is new: steps after the last one yielded, and a status that differs from
        the last one. reconnect_s=0 raises AccumdError(UNAVAILABLE) at once, as before.
        """
        request = accum_pb2.WatchJobRequest(id=job_id)
        last_step, skip_through, last_status = 0, 0, None
        for event in self._stream_across_restarts(self._stub.WatchJob, lambda began: request,
                                                  reconnect_s):
            if event is None:  # reconnected: the new stream replays the history
                skip_through = last_step
            elif event.WhichOneof("event") == "status":
                key = (event.status.state, event.status.message)
                if key != last_status:
                    last_status = key
                    yield event
            elif event.WhichOneof("event") == "metrics":
                # Skip the replayed steps already yielded. Steps that go back otherwise
                # are a restarted attempt's.
                if skip_through and event.metrics.step <= skip_through:
                    continue
                skip_through = 0
                last_step = event.metrics.step
                yield event

    def wait(self, job_id, timeout=None, reconnect_s=60.0):
        """Blocks until the job ends (or raises AccumdError(DEADLINE_EXCEEDED) after
        `timeout` seconds); returns its final JobStatus. Rides out an accumd restart as
        watch() does: the job trains on meanwhile."""
        deadline = None if timeout is None else time.monotonic() + timeout
        request = accum_pb2.WatchJobRequest(id=job_id)
        for _ in self._stream_across_restarts(self._stub.WatchJob, lambda began: request,
                                              reconnect_s, deadline):
            pass
        return self.get(job_id)

    def cancel(self, job_id, force=False):
        """Graceful: the workers checkpoint, then stop; force kills them at once.
        Returns the JobStatus (CANCELLING, or CANCELLED when nothing was running)."""
        return self._unary(self._stub.CancelJob, accum_pb2.CancelJobRequest(id=job_id, force=force))

    def continue_job(self, job_id, max_steps=0, timeout=600.0):
        """Queues a new job that goes on from the ended job's newest checkpoint that
        verifies (the same spec; max_steps 0: the job's own, else train to that step).
        Returns the new job's JobStatus. FAILED_PRECONDITION while the job is active or when
        no checkpoint verifies; INVALID_ARGUMENT when max_steps leaves nothing to train.
        accumd reads the checkpoint through first, hence the long timeout."""
        request = accum_pb2.ContinueJobRequest(id=job_id, max_steps=max_steps)
        return self._unary(self._stub.ContinueJob, request, timeout).job

    def delete(self, job_id, timeout=600.0):
        """Removes an ended job: its record and its folder (logs, metrics, checkpoints).
        Returns the DeleteJobResponse (job_dir, bytes_freed). FAILED_PRECONDITION while the
        job is active or while an active job starts from one of its checkpoints."""
        return self._unary(self._stub.DeleteJob, accum_pb2.DeleteJobRequest(id=job_id), timeout)

    def checkpoint(self, job_id, timeout=600.0):
        """Checkpoints a RUNNING job at its next optimizer step; returns the
        CheckpointInfo (step, path, bytes) once the checkpoint is complete."""
        return self._unary(self._stub.CheckpointJob, accum_pb2.CheckpointJobRequest(id=job_id),
                           timeout)

    def checkpoints(self, job_id):
        """The job's complete checkpoints (CheckpointInfo), oldest first."""
        request = accum_pb2.ListCheckpointsRequest(id=job_id)
        return list(self._unary(self._stub.ListCheckpoints, request).checkpoints)

    def logs(self, job_id, rank=-1, tail=0, follow=False, reconnect_s=60.0):
        """Yields LogLines (`.rank`, `.line`, `.index` in the rank's log): the last `tail`
        lines per rank (0: all), then with follow new ones until the job ends. rank -1:
        every rank. With follow, rides out an accumd restart as watch() does and yields
        each line once."""
        if not follow:
            request = accum_pb2.StreamLogsRequest(id=job_id, rank=rank, tail=tail)
            yield from self._stream(self._stub.StreamLogs, request, 60.0)
            return
        next_index = {}  # rank -> index of the next line not yet yielded

        def request(began):  # after a reconnection: all lines, less those yielded
            return accum_pb2.StreamLogsRequest(id=job_id, rank=rank, follow=True,
                                               tail=0 if began else tail)

        for line in self._stream_across_restarts(self._stub.StreamLogs, request, reconnect_s):
            if line is None or (line.rank in next_index and line.index < next_index[line.rank]):
                continue  # a reconnection, or a line yielded before it
            next_index[line.rank] = line.index + 1
            yield line

    # ---- plumbing -------------------------------------------------------------

    def _stream_across_restarts(self, method, make_request, reconnect_s, deadline=None):
        """Yields the items of the stream method(make_request(began)). If accumd goes
        away once the stream has begun (a restart: the job goes on), waits up to
        reconnect_s seconds for it, yields None to mark the reconnection (the caller
        skips what the new stream replays), and opens the stream again; otherwise a
        failure raises AccumdError. `deadline` (time.monotonic()) bounds it all:
        DEADLINE_EXCEEDED once it passes."""
        began, give_up = False, None
        while True:
            timeout = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            call = method(make_request(began), metadata=self._metadata, timeout=timeout)
            try:
                for item in call:
                    began, give_up = True, None
                    yield item
                return
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or not began or reconnect_s <= 0:
                    raise self._error(error) from None
                lost = error
            finally:
                call.cancel()
            if give_up is None:
                give_up = time.monotonic() + reconnect_s
            try:
                self._wait_for_accumd(lost, give_up if deadline is None else min(give_up, deadline))
            except AccumdError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise AccumdError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                      "the deadline passed while accumd was away") from None
                raise
            yield None

    def _wait_for_accumd(self, lost, give_up):
        """Waits until the channel is ready again, or raises `lost` as AccumdError once
        time.monotonic() passes give_up."""
        try:
            remaining = give_up - time.monotonic()
            if remaining <= 0:
                raise grpc.FutureTimeoutError()
            grpc.channel_ready_future(self._channel).result(timeout=remaining)
        except grpc.FutureTimeoutError:
            raise self._error(lost) from None

    def _error(self, error):
        """AccumdError of a failed call. A plaintext call to a TLS accumd meets a hung-up
        handshake ("Socket closed"): say so, as accumctl does."""
        details = error.details() or ""
        if (error.code() == grpc.StatusCode.UNAVAILABLE and not self._tls
                and "Socket closed" in details):
            details += "; if accumd serves TLS, pass tls_ca= (its CA's PEM file)"
        elif error.code() == grpc.StatusCode.UNAVAILABLE and "keepalive" in details.lower():
            details = (f"accumd at {self.server} stopped answering (no reply to a keepalive "
                       f"ping within {self._keepalive_timeout_s:g} s): it may be stopped "
                       f"(SIGSTOP) or overloaded, or its host is gone ({details})")
        return AccumdError(error.code(), details)

    def _unary(self, method, request, timeout=None):
        try:
            return method(request, timeout=timeout or self._timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise self._error(error) from None

    def _stream(self, method, request, timeout):
        call = method(request, timeout=timeout, metadata=self._metadata)
        try:
            yield from call
        except grpc.RpcError as error:
            raise self._error(error) from None
        finally:
            call.cancel()  # the consumer stopped early: end the stream on the server too


def _job_state(state):
    """A JobState value from a value or a name in any case ("running", "RUNNING")."""
    if not isinstance(state, str):
        return state
    names = [name for name in accum_pb2.JobState.keys() if name != "JOB_STATE_UNSPECIFIED"]
    if state.upper() not in names:
        raise AccumdError(grpc.StatusCode.INVALID_ARGUMENT,
                          f"states: unknown job state {state!r}; expected one of "
                          f"{', '.join(names)}")
    return accum_pb2.JobState.Value(state.upper())


def _read_text(path, what):
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError as error:
        raise AccumdError(grpc.StatusCode.INVALID_ARGUMENT, f"{what} {path}: {error.strerror}") from None
