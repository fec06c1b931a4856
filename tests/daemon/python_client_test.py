#!/usr/bin/python3
"""The Python client (client/python/accumd_client) against a real accumd.

Starts accumd on a free loopback port with a token and a temporary state dir (as
tests/daemon/daemon_harness.cpp does), then drives every client method: the example
job (deploy/examples/tiny-bytes.json, 3 steps) to SUCCEEDED, checkpoint-now and a
graceful cancel of a running job, and refusals carrying their gRPC status code; and a
second accumd serving TLS, with and without tls_ca.

Run by ctest (label daemon) as
  /usr/bin/python3 python_client_test.py --build-dir BUILD --source-dir SRC
Exits 77 (ctest: SKIPPED) with the reason when python3-grpcio, python3-protobuf or
the generated stubs are missing.
"""
import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

SKIP = 77
ARGS = None  # parsed command line


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", default=os.environ.get("ACCUM_BUILD_DIR", "build"))
    parser.add_argument("--source-dir",
                        default=os.path.dirname(os.path.dirname(os.path.dirname(
                            os.path.abspath(__file__)))))
    args, rest = parser.parse_known_args()
    args.build_dir = os.path.abspath(args.build_dir)
    return args, rest


def import_client_or_skip(build_dir):
    for module, package in (("grpc", "python3-grpcio"), ("google.protobuf", "python3-protobuf")):
        try:
            __import__(module)
        except ImportError as error:
            print(f"SKIPPED: cannot import {module} ({error}); apt-get install {package}")
            sys.exit(SKIP)
    sys.path.insert(0, os.path.join(build_dir, "python"))
    if not os.path.exists(os.path.join(build_dir, "python", "accum", "v1", "accum_pb2_grpc.py")):
        print(f"SKIPPED: no generated stubs under {build_dir}/python (grpc_python_plugin was "
              "not found when CMake configured; apt-get install protobuf-compiler-grpc)")
        sys.exit(SKIP)


def read_text(path):
    try:
        with open(path, errors="replace") as file:
            return file.read()
    except FileNotFoundError:
        return ""


class Daemon:
    """accumd on 127.0.0.1:0 with a token; workers get one OpenMP thread each."""

    def __init__(self, extra_args=None):
        """extra_args(dir): more accumd flags, given the daemon's folder (files they name
        can be made there)."""
        self.dir = tempfile.mkdtemp(prefix="accumd-pytest-")
        self.extra_args = extra_args(self.dir) if extra_args else []
        self.token_file = os.path.join(self.dir, "token")
        with open(self.token_file, "w") as file:
            file.write(f"py-token-{os.getpid()}\n")
        self.log_path = os.path.join(self.dir, "accumd.log")
        self.start("127.0.0.1:0")

    def start(self, listen):
        """Starts accumd on `listen` and waits until it serves; sets self.address."""
        addr_file = os.path.join(self.dir, "accumd.addr")
        if os.path.exists(addr_file):
            os.remove(addr_file)
        mpirun_args = []
        for arg in ("--bind-to", "none", "--mca", "btl", "self,vader"):
            mpirun_args += ["--mpirun-arg", arg]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [os.path.join(ARGS.build_dir, "bin", "accumd"), "--listen", listen,
                 "--state-dir", os.path.join(self.dir, "state"), "--token-file", self.token_file,
                 "--slots", "2", "--addr-file", addr_file, "--restart-backoff-ms", "200",
                 *mpirun_args, *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 15
        while not read_text(addr_file).strip():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"accumd did not start:\n{self.log()}")
            time.sleep(0.05)
        self.address = read_text(addr_file).strip()

    def restart(self, down_s):
        """kill -9 accumd, wait down_s, start it again on the same address (the workers
        it launched keep training and rejoin it)."""
        self.process.kill()
        self.process.wait()
        time.sleep(down_s)
        self.start(self.address)

    def log(self):
        return read_text(self.log_path)

    def close(self):
        self.process.kill()
        self.process.wait()
        # Workers outlive accumd by design; end the ones this daemon started.
        jobs_dir = os.path.join(self.dir, "state", "jobs")
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as file:
                    if jobs_dir.encode() in file.read():
                        os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


def example_spec_path():
    return os.path.join(ARGS.source_dir, "deploy", "examples", "tiny-bytes.json")


def example_spec_dict():
    with open(example_spec_path()) as file:
        return json.load(file)


class PythonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon()
        cls.client = Client(cls.daemon.address, token_file=cls.daemon.token_file)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.daemon.close()

    def poll(self, job_id, done, timeout_s=180):
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.client.get(job_id)
            if done(job):
                return job
            if time.monotonic() > deadline:
                self.fail(f"job {job_id} still {accum_pb2.JobState.Name(job.state)}: "
                          f"{job.message}\naccumd log:\n{self.daemon.log()}")
            time.sleep(0.1)

    def test_example_job_runs_to_succeeded(self):
        spec = load_spec(example_spec_path())
        self.assertEqual(list(spec.data.train), ["/usr/share/common-licenses/*"],
                         "a single data.train string becomes a one-element list")
        spec.max_steps = 3
        job = self.client.submit(spec, spec_dir=os.path.dirname(example_spec_path()))
        self.assertRegex(job.id, r"^job-\d+$")
        self.assertIn(job.state, (accum_pb2.QUEUED, accum_pb2.STARTING))

        seen_steps = set()
        def ended(status):
            seen_steps.add(status.last_metrics.step)
            return status.state in TERMINAL_STATES
        done = self.poll(job.id, ended)
        self.assertEqual(done.state, accum_pb2.SUCCEEDED, done.message)
        self.assertEqual(done.last_metrics.step, 3)
        self.assertEqual(done.latest_checkpoint_step, 3)
        self.assertEqual(done.spec.max_steps, 3)
        self.assertEqual([accum_pb2.JobState.Name(t.state) for t in done.transitions],
                         ["QUEUED", "STARTING", "RUNNING", "SUCCEEDED"])
        self.assertTrue(seen_steps <= {0, 1, 2, 3}, seen_steps)

        # An ended job's watch replays every step's metrics, then its final status (last,
        # as in a live watch), then ends.
        events = list(self.client.watch(job.id))
        self.assertEqual(events[-1].WhichOneof("event"), "status")
        self.assertEqual(events[-1].status.state, accum_pb2.SUCCEEDED)
        self.assertEqual([e.WhichOneof("event") for e in events].count("status"), 1)
        metrics = [e.metrics for e in events if e.WhichOneof("event") == "metrics"]
        self.assertEqual([m.step for m in metrics], [1, 2, 3])
        for m in metrics:
            self.assertTrue(math.isfinite(m.loss) and 0 < m.loss < math.log(256) + 1, m.loss)
            self.assertEqual(m.tokens, 8192)
            self.assertGreater(m.tokens_per_s, 0)
        self.assertEqual(self.client.wait(job.id).state, accum_pb2.SUCCEEDED)

        self.assertIn(job.id, [j.id for j in self.client.list()])
        self.assertIn(job.id, [j.id for j in self.client.list(states=["SUCCEEDED"])])
        self.assertNotIn(job.id, [j.id for j in self.client.list(states=[accum_pb2.FAILED])])
        self.assertEqual([c.step for c in self.client.checkpoints(job.id)], [3])
        lines = list(self.client.logs(job.id, rank=0, tail=3))
        self.assertTrue(0 < len(lines) <= 3 and all(l.rank == 0 for l in lines), lines)

        with self.assertRaises(AccumdError) as refused:
            self.client.cancel(job.id)
        self.assertEqual(refused.exception.code, grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("already ended", refused.exception.details)

        # The ended job goes on from its checkpoint (step 3) as a new job, to step 5.
        more = self.client.continue_job(job.id, max_steps=5)
        self.assertNotEqual(more.id, job.id)
        self.assertEqual(more.spec.max_steps, 5)
        self.assertEqual(self.client.wait(more.id, timeout=120).state, accum_pb2.SUCCEEDED)
        steps = [e.metrics.step for e in self.client.watch(more.id)
                 if e.WhichOneof("event") == "metrics"]
        self.assertEqual(steps, [4, 5])
        with self.assertRaises(AccumdError) as refused:
            self.client.continue_job(job.id)  # its own max_steps, 3: nothing left to train
        self.assertEqual(refused.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("max_steps: 3 leaves nothing to train", refused.exception.details)

        # Once no active job starts from it, the ended job goes with its folder.
        deleted = self.client.delete(job.id)
        self.assertEqual(deleted.job_dir, job.job_dir)
        self.assertGreater(deleted.bytes_freed, 0)
        self.assertFalse(os.path.exists(job.job_dir))
        with self.assertRaises(AccumdError) as gone:
            self.client.get(job.id)
        self.assertEqual(gone.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertEqual(self.client.get(more.id).state, accum_pb2.SUCCEEDED)

    def test_running_job_checkpoint_now_then_graceful_cancel(self):
        job = self.client.submit(example_spec_path())  # a path: resolved like accumctl's
        self.assertEqual(job.spec.max_steps, 150)
        self.poll(job.id, lambda j: j.state == accum_pb2.RUNNING and j.last_metrics.step >= 1)
        info = self.client.checkpoint(job.id)
        self.assertGreaterEqual(info.step, 1)
        self.assertTrue(os.path.exists(os.path.join(info.path, "manifest.json")), info.path)
        self.assertIn(info.step, [c.step for c in self.client.checkpoints(job.id)])

        cancelling = self.client.cancel(job.id)
        self.assertIn(cancelling.state, (accum_pb2.CANCELLING, accum_pb2.CANCELLED))
        done = self.client.wait(job.id, timeout=120)
        self.assertEqual(done.state, accum_pb2.CANCELLED, done.message)
        self.assertGreaterEqual(done.latest_checkpoint_step, info.step)

    def test_bad_specs_are_invalid_argument_naming_the_field(self):
        cases = []
        spec = example_spec_dict()
        spec["optimizer"]["lr"] = -1
        cases.append((spec, "optimizer.lr"))
        spec = example_spec_dict()
        spec["batch"]["tokens_per_update"] = 1000
        cases.append((spec, "batch.tokens_per_update"))
        spec = example_spec_dict()
        spec["data"]["train"] = "no-such-corpus.txt"
        cases.append((spec, "data.train"))
        spec = example_spec_dict()
        spec["optimiser"] = {}  # refused by the client's parser, as by accumctl's
        cases.append((spec, "optimiser"))
        for spec, field in cases:
            with self.subTest(field=field):
                with self.assertRaises(AccumdError) as refused:
                    self.client.submit(spec)
                self.assertEqual(refused.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
                self.assertIn(field, refused.exception.details)
        self.assertIsInstance(refused.exception, SpecError)  # the last case never left the client

    def test_watch_rides_out_an_accumd_restart(self):
        # Its own accumd: this test kills it.
        daemon = Daemon()
        try:
            with Client(daemon.address, token_file=daemon.token_file) as client:
                spec = example_spec_dict()
                spec["max_steps"] = 40
                job = client.submit(spec, spec_dir=os.path.dirname(example_spec_path()))
                followed = []
                follower = threading.Thread(
                    target=lambda: followed.extend(client.logs(job.id, rank=0, follow=True)))
                follower.start()
                events = client.watch(job.id)
                steps = []
                for event in events:
                    if event.WhichOneof("event") == "metrics":
                        steps.append(event.metrics.step)
                        if event.metrics.step == 3:
                            daemon.restart(down_s=1.0)
                    elif event.status.state in TERMINAL_STATES:
                        final = event.status
                self.assertEqual(final.state, accum_pb2.SUCCEEDED, final.message)
                self.assertEqual(steps, list(range(1, 41)), "each step once, in order")
                follower.join(timeout=60)
                self.assertFalse(follower.is_alive(), "logs(follow=True) did not end")
                logged = list(client.logs(job.id, rank=0))
                self.assertGreater(len(logged), 40)
                self.assertEqual([(l.index, l.line) for l in followed],
                                 [(l.index, l.line) for l in logged], "each line once")
                with self.assertRaises(AccumdError) as gone:
                    daemon.process.kill()
                    daemon.process.wait()
                    list(client.watch(job.id))  # never began: no waiting
                self.assertEqual(gone.exception.code, grpc.StatusCode.UNAVAILABLE)
        finally:
            daemon.close()

    def test_quiet_watch_lives_and_a_stopped_accumd_ends_it(self):
        # Its own accumd: this test stops it. Job 1 takes both slots, so job 2 stays QUEUED
        # and its watch is quiet after its first event.
        daemon = Daemon()
        stopped = False
        try:
            with Client(daemon.address, token_file=daemon.token_file, keepalive_s=1,
                        keepalive_timeout_s=1) as client:
                spec = example_spec_dict()
                spec["max_steps"] = 100000
                spec["world_size"] = 2
                spec_dir = os.path.dirname(example_spec_path())
                busy = client.submit(dict(spec, name="busy"), spec_dir=spec_dir)
                queued = client.submit(dict(spec, name="queued"), spec_dir=spec_dir)
                self.assertEqual(client.get(queued.id).state, accum_pb2.QUEUED)
                outcome = {}

                def watch():
                    try:
                        outcome["events"] = list(client.watch(queued.id, reconnect_s=2))
                    except AccumdError as error:
                        outcome["error"] = error

                watcher = threading.Thread(target=watch)
                watcher.start()
                # 5 s of quiet is 5 keepalive intervals: accumd answers the pings (and
                # permits them), so the watch goes on.
                watcher.join(timeout=5)
                self.assertTrue(watcher.is_alive(), f"a quiet watch ended: {outcome}")
                os.kill(daemon.process.pid, signal.SIGSTOP)
                stopped = True
                watcher.join(timeout=40)
                self.assertFalse(watcher.is_alive(),
                                 "the watch of a stopped accumd did not end within 40 s")
                error = outcome.get("error")
                self.assertIsNotNone(error, f"the watch ended without an error: {outcome}")
                self.assertEqual(error.code, grpc.StatusCode.UNAVAILABLE)
                self.assertIn(f"accumd at {daemon.address} stopped answering", error.details)
                os.kill(daemon.process.pid, signal.SIGCONT)
                stopped = False
                client.cancel(busy.id, force=True)
        finally:
            if stopped:
                os.kill(daemon.process.pid, signal.SIGCONT)
            daemon.close()

    def test_keepalive_times_must_be_positive(self):
        for bad in ({"keepalive_s": 0}, {"keepalive_timeout_s": -1}, {"keepalive_s": "20"}):
            with self.assertRaises(AccumdError) as refused:
                Client("127.0.0.1:1", **bad)
            self.assertEqual(refused.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn(next(iter(bad)), refused.exception.details)

    def test_wait_rides_out_an_accumd_restart(self):
        # Its own accumd: this test kills it while wait() blocks.
        daemon = Daemon()
        restarter = None
        try:
            with Client(daemon.address, token_file=daemon.token_file) as client:
                spec = example_spec_dict()
                spec["max_steps"] = 30
                job = client.submit(spec, spec_dir=os.path.dirname(example_spec_path()))
                with self.assertRaises(AccumdError) as late:
                    client.wait(job.id, timeout=0.5)
                self.assertEqual(late.exception.code, grpc.StatusCode.DEADLINE_EXCEEDED)
                restarted = threading.Event()

                def restart_at_step_3():
                    with Client(daemon.address, token_file=daemon.token_file) as poller:
                        while poller.get(job.id).last_metrics.step < 3:
                            time.sleep(0.05)
                    daemon.restart(down_s=1.0)
                    restarted.set()

                restarter = threading.Thread(target=restart_at_step_3)
                restarter.start()
                final = client.wait(job.id, timeout=300)
                restarter.join(timeout=60)
                self.assertTrue(restarted.is_set(), "accumd was not restarted during the wait")
                self.assertEqual(final.state, accum_pb2.SUCCEEDED, final.message)
                self.assertEqual(final.last_metrics.step, 30)
        finally:
            if restarter is not None:
                restarter.join(timeout=60)  # it may still be restarting accumd
            daemon.close()

    def test_list_takes_state_names_in_any_case(self):
        job = self.client.submit(dict(example_spec_dict(), max_steps=2),
                                 spec_dir=os.path.dirname(example_spec_path()))
        self.assertEqual(self.client.wait(job.id, timeout=120).state, accum_pb2.SUCCEEDED)
        by_value = [j.id for j in self.client.list(states=[accum_pb2.SUCCEEDED])]
        self.assertIn(job.id, by_value)
        self.assertEqual([j.id for j in self.client.list(states=["succeeded"])], by_value)
        self.assertEqual([j.id for j in self.client.list(states=["Succeeded"])], by_value)
        self.assertNotIn(job.id, [j.id for j in self.client.list(states=["running", "failed"])])
        with self.assertRaises(AccumdError) as unknown:
            self.client.list(states=["done"])
        self.assertEqual(unknown.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("'done'", unknown.exception.details)
        self.assertIn("QUEUED", unknown.exception.details)
        for unspecified in ("JOB_STATE_UNSPECIFIED", 0):  # matches no job: refused, not empty
            with self.assertRaises(AccumdError) as refused:
                self.client.list(states=[unspecified])
            self.assertEqual(refused.exception.code, grpc.StatusCode.INVALID_ARGUMENT)

    def test_unknown_job_and_wrong_token(self):
        with self.assertRaises(AccumdError) as missing:
            self.client.get("job-999999")
        self.assertEqual(missing.exception.code, grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(AccumdError) as missing_stream:
            list(self.client.watch("job-999999"))
        self.assertEqual(missing_stream.exception.code, grpc.StatusCode.NOT_FOUND)
        with Client(self.daemon.address, token="wrong") as stranger:
            with self.assertRaises(AccumdError) as refused:
                stranger.list()
        self.assertEqual(refused.exception.code, grpc.StatusCode.UNAUTHENTICATED)


def make_self_signed(directory):
    """tls-cert.pem / tls-key.pem in `directory`: a certificate for 127.0.0.1."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", os.path.join(directory, "tls-key.pem"),
                    "-out", os.path.join(directory, "tls-cert.pem")],
                   check=True, capture_output=True)


class PythonClientTlsTest(unittest.TestCase):
    """The client against an accumd that serves TLS (the README's remote set-up)."""

    @classmethod
    def setUpClass(cls):
        # openssl is one of accumd's packages (deploy/setup.sh): without it these tests fail,
        # as a skip here would leave the whole run passing with its TLS half untested.
        if shutil.which("openssl") is None:
            raise RuntimeError("no openssl command to make a test certificate; "
                               "apt-get install openssl (deploy/setup.sh installs it)")
        cls.daemon = Daemon(cls.tls_flags)
        cls.cert = os.path.join(cls.daemon.dir, "tls-cert.pem")

    @staticmethod
    def tls_flags(directory):
        make_self_signed(directory)
        return ["--tls-cert", os.path.join(directory, "tls-cert.pem"),
                "--tls-key", os.path.join(directory, "tls-key.pem")]

    @classmethod
    def tearDownClass(cls):
        cls.daemon.close()

    def test_tls_ca_verifies_accumd(self):
        with Client(self.daemon.address, token_file=self.daemon.token_file,
                    tls_ca=self.cert) as accumd:
            self.assertEqual(list(accumd.list()), [])
            with self.assertRaises(AccumdError) as missing:
                accumd.get("job-999999")
            self.assertEqual(missing.exception.code, grpc.StatusCode.NOT_FOUND)

    def test_plaintext_call_to_a_tls_accumd_says_to_pass_tls_ca(self):
        # Without tls_ca accumd hangs up on the handshake; the error used to end at
        # "Socket closed", naming neither TLS nor tls_ca.
        with Client(self.daemon.address, token_file=self.daemon.token_file) as accumd:
            with self.assertRaises(AccumdError) as refused:
                accumd.list()
        self.assertEqual(refused.exception.code, grpc.StatusCode.UNAVAILABLE)
        self.assertIn("if accumd serves TLS, pass tls_ca=", refused.exception.details)


class SpecParityTest(unittest.TestCase):
    """The client's spec parser refuses what accum-worker's (and accumctl's: the same C++
    parser) refuses, with the same message: each bad spec goes to both."""

    CASES = [
        '{"model": {"nlayer": 2}}',
        '{"data": {"train_files": ["a"]}}',
        '{"optimizer": {}, "foo": 1}',
        '{"optimizer": {"lr": "abc"}}',
        '{"max_steps": 1.5}',
        '{"max_steps": 2147483648}',
        '{"max_steps": 1e30}',
        '{"model": [1]}',
        '{"device": "TPU"}',
        '{"data": {"shuffle": "yes"}}',
        '{"data": {"shuffle": "true"}}',
        '{"data": {"train": ["a", 1]}}',
        '{"launch": {"mpirun_args": "-v"}}',
        '{"seed": 12345678901234567891}',
        '{"max_steps": 3, "maxSteps": 4}',
        '{"data": {"train": "a", "train": "b"}}',
        '{"name": 5}',
    ]

    def worker_error(self, text):
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "job.json")
            with open(path, "w") as file:
                file.write(text)
            result = subprocess.run(
                [os.path.join(ARGS.build_dir, "bin", "accum-worker"), "--spec", path,
                 "--print-spec"], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
        prefix = f"accum-worker: error: {path}: "
        lines = [line for line in result.stderr.splitlines() if line.startswith(prefix)]
        self.assertEqual(len(lines), 1, result.stderr)
        return lines[0][len(prefix):]

    def test_bad_specs_get_the_message_accum_worker_gives(self):
        for text in self.CASES:
            with self.subTest(spec=text):
                expected = self.worker_error(text)
                self.assertTrue(expected.startswith("spec field `"), expected)
                with self.assertRaises(SpecError) as refused:
                    parse_spec(text)
                self.assertEqual(refused.exception.details, expected)

    def test_what_both_accept_parses_to_the_same_values(self):
        spec = parse_spec('{"maxSteps": "12", "seed": "12345678901234567891", "device": 1, '
                          '"data": {"shuffle": true, "train": "a"}, "model": {"preset": null}}')
        self.assertEqual(spec.max_steps, 12)
        self.assertEqual(spec.seed, 12345678901234567891)
        self.assertEqual(spec.device, accum_pb2.CUDA)
        self.assertTrue(spec.data.shuffle)
        self.assertEqual(list(spec.data.train), ["a"])


if __name__ == "__main__":
    ARGS, rest = parse_args()
    import_client_or_skip(ARGS.build_dir)
    import grpc
    from accum.v1 import accum_pb2
    from accumd_client import TERMINAL_STATES, AccumdError, Client, SpecError, load_spec
    from accumd_client.spec import parse_spec
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)
