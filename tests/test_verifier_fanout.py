"""Verification wall time (issue 24): one run's segments over several executors, deterministic
mode without torch's compiler, idle threads that sleep. No sandbox is started here except in the
one end-to-end test (tests/test_verifier_sandbox.py covers the warm executor's confinement)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from computewatch.verifier._fanout import Spread, helpers_worth_starting


class _Conv:
    """A stand-in executor conversation: records the segments it replayed, in order."""

    def __init__(self, name: str) -> None:
        self.name, self.done, self.killed, self.stopped = name, [], False, False


def _spread(segments: list[int], *, startup_s: float, most: int, work_s: float = 0.0, fail_at: int | None = None,
            broken_start: bool = False) -> tuple[Spread, _Conv, list[_Conv]]:
    primary, made = _Conv("primary"), []
    lock = threading.Lock()

    def make() -> _Conv:
        with lock:
            made.append(_Conv(f"helper{len(made)}"))
            return made[-1]

    def begin(conv: _Conv) -> None:
        if broken_start:
            raise RuntimeError("could not start")

    def work(conv: _Conv, index: int, seg: int) -> None:
        time.sleep(work_s)
        if seg == fail_at:
            raise RuntimeError(f"failed at {seg}")
        conv.done.append(seg)

    spread = Spread(segments, primary, work, make, begin, lambda c: setattr(c, "killed", True), lambda c: setattr(c, "stopped", True),
                    lambda seg: 4, startup_s, most)
    return spread, primary, made


def test_every_segment_once_and_each_executor_in_ascending_order() -> None:
    segments = list(range(0, 64, 4))
    spread, primary, made = _spread(segments, startup_s=0.0, most=2, work_s=0.01)
    assert spread.run() == [None] * len(segments)
    assert len(made) == 2 and spread.helpers_started == sum(1 for c in made if c.done)  # counted only when they helped
    replayed = [seg for conv in [primary, *made] for seg in conv.done]
    assert sorted(replayed) == segments  # each once
    for conv in [primary, *made]:
        assert conv.done == sorted(conv.done)  # never back to an earlier checkpoint
        assert conv is primary or conv.stopped  # every helper ended


def test_no_helper_when_the_work_left_is_below_twice_the_start_up() -> None:
    spread, primary, made = _spread(list(range(8)), startup_s=60.0, most=3)
    assert spread.run() == [None] * 8
    assert made == [] and primary.done == list(range(8))
    assert helpers_worth_starting(10.0, 4.0, 3) == 3 and helpers_worth_starting(7.9, 4.0, 3) == 0
    assert helpers_worth_starting(100.0, 1.0, 0) == 0


def test_started_helpers_replay_from_the_first_segment_and_then_take_the_tail() -> None:
    segments = list(range(0, 32, 4))
    primary, ready = _Conv("primary"), [_Conv("warm0"), _Conv("warm1")]
    begun, tails = [], []
    lock = threading.Lock()

    def work(conv: _Conv, index: int, seg: int) -> None:
        time.sleep(0.02)
        conv.done.append(seg)

    def tail_work(conv: _Conv, j: int) -> None:
        with lock:
            tails.append((conv.name, j, sorted(s for c in [primary, *ready] for s in c.done)))

    spread = Spread(segments, primary, work, lambda: pytest.fail("a cold helper was made"), begun.append,
                    lambda c: setattr(c, "killed", True), lambda c: setattr(c, "stopped", True), lambda seg: 4, 60.0, 2,
                    ready=ready, tail=3, tail_work=tail_work)
    assert spread.run() == [None] * len(segments)
    assert sorted(c.name for c in begun) == ["warm0", "warm1"]  # each begun once
    assert all(c.done for c in ready) and spread.helpers_started == 2  # they helped from the start
    assert sorted(s for c in [primary, *ready] for s in c.done) == segments
    assert sorted(j for _, j, _ in tails) == [0, 1, 2] and spread.tail_ran == [True] * 3 and spread.tail_errors == [None] * 3
    for conv in [primary, *ready]:
        assert conv.done == sorted(conv.done)
        # an executor's tail jobs (later checkpoints) come after every segment it replayed
        assert all(set(conv.done) <= set(done) for name, _, done in tails if name == conv.name)


def test_a_failed_tail_job_is_returned_at_its_place() -> None:
    primary = _Conv("primary")

    def tail_work(conv: _Conv, j: int) -> None:
        if j == 1:
            raise RuntimeError("losses failed")

    spread = Spread([0, 4], primary, lambda c, i, s: c.done.append(s), lambda: _Conv("x"), lambda c: None, lambda c: None,
                    lambda c: None, lambda seg: 4, 60.0, 0, tail=3, tail_work=tail_work)
    assert spread.run() == [None, None]
    assert [e is not None for e in spread.tail_errors] == [False, True, False]
    assert spread.tail_ran == [True, True, False]  # the executor that failed took no more


def test_a_helper_that_cannot_start_loses_no_segment() -> None:
    spread, primary, made = _spread(list(range(6)), startup_s=0.0, most=2, work_s=0.005, broken_start=True)
    assert spread.run() == [None] * 6
    assert primary.done == list(range(6)) and all(not c.done for c in made)


def test_a_failed_segment_is_returned_at_its_place_and_its_executor_takes_no_more() -> None:
    spread, primary, _ = _spread(list(range(5)), startup_s=60.0, most=1, fail_at=2)
    errors = spread.run()
    assert [e is not None for e in errors] == [False, False, True, False, False]
    assert primary.done == [0, 1]  # the failed executor stopped; nobody else was started


def test_deterministic_mode_sets_both_flags_without_loading_the_compiler() -> None:
    code = ("import sys, torch\n"
            "from computewatch.formats.program import deterministic_cpu\n"
            "deterministic_cpu(1)\n"
            "assert torch.are_deterministic_algorithms_enabled()\n"
            "assert not any(m.startswith(('torch._inductor', 'torch._dynamo')) for m in sys.modules), 'compiler loaded'\n"
            "import torch._inductor.config as c\n"
            "assert c.deterministic, 'inductor not deterministic'\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    env.pop("TORCHINDUCTOR_DETERMINISTIC", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_deterministic_mode_reaches_a_compiler_already_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from computewatch.formats.program import deterministic_cpu

    loaded = types.SimpleNamespace(deterministic=False)  # stands in for torch._inductor.config, loaded earlier
    monkeypatch.setitem(sys.modules, "torch._inductor.config", loaded)
    monkeypatch.setenv("TORCHINDUCTOR_DETERMINISTIC", "0")  # restored afterwards
    threads, flag = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        deterministic_cpu(1)
        assert loaded.deterministic and torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(threads)
        torch._C._set_deterministic_algorithms(flag)


def test_the_cli_asks_for_sleeping_openmp_threads() -> None:
    # The CLI's entry point sets the policy before any command loads torch; a user's choice is kept.
    runner = ("import os\n"
              "import computewatch.cli as cli\ncli.app = lambda: print(os.environ.get('OMP_WAIT_POLICY'))\ncli.main()\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    proc = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, env=env, timeout=120)
    assert proc.stdout.strip() == "PASSIVE", proc.stderr[-1000:]
    proc = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, timeout=120)
    assert proc.stdout.strip() == "ACTIVE", proc.stderr[-1000:]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16-step MLP run (4 segments), shared by this module's verifications."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _runs import honest_run

    return honest_run(tmp_path_factory.mktemp("fanout") / "run", steps=16)


def test_a_run_spread_over_two_executors_is_judged_as_on_one(small_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from _runs import failed, run_verify

    from computewatch.verifier import _examine
    from computewatch.verifier.cluster import WarmPool, segments_hint, warm_executors

    # Both executors come from the warm pool (started before the judge's work, as the CLI does
    # for one run on two workers); the first one's first segment waits until the helper has
    # taken one, so that both replay whatever the machine's load.
    replays, helper_took = _examine._replays, threading.Event()

    def replays_in_both(conv, res, steps, samples, segments):  # type: ignore[no-untyped-def]
        if threading.current_thread() is threading.main_thread():
            helper_took.wait(120)
        else:
            helper_took.set()
        return replays(conv, res, steps, samples, segments)

    monkeypatch.setattr(_examine, "_replays", replays_in_both)
    assert segments_hint(small_run) == 4 and warm_executors(1, 2, [segments_hint(small_run)]) == 2
    with WarmPool(warm_executors(1, 2, [segments_hint(small_run)]), sandbox=True) as warm:
        doc = run_verify(small_run, segments="all", workers=2, warm=warm)
        assert warm.take(True) is None  # the helper was the warm one: nothing started cold
    assert helper_took.is_set()
    assert doc["verdict"] == "compliant", failed(doc)
    (rd,) = doc["runs"]
    assert rd["executors"] == 2
    assert [s["from"] for s in rd["segments"]] == [0, 4, 8, 12] and all(s["passed"] for s in rd["segments"])
    assert doc["snapshots"]["explained"] == doc["snapshots"]["logged"]
    assert rd["memorization"] is not None  # the loss evaluations ran (on whichever executor was free)
    # Every executor's FLOP count reaches the verdict (a spread run once lost its counted steps,
    # leaving `compute` nothing to compare the measured CPU time with).
    assert rd["compute"]["executor_count"] and rd["compute"]["executor_count"] > 0, rd["compute"]


def test_warm_executors_cover_every_run_examined_at_once() -> None:
    from computewatch.verifier.cluster import WARM_PER_RUN, warm_executors

    assert warm_executors(1, 1) == 1 and warm_executors(1, 2) == 2 and warm_executors(2, 2) == 2
    assert warm_executors(5, 2) == 2  # two runs at a time, one executor each
    assert warm_executors(1, 64) == WARM_PER_RUN  # the rest start when the replay is worth it
    assert warm_executors(3, 8) == 6 and warm_executors(0, 4) == 0
    # A run of few segments gets its first executor only (a helper's first-time costs would not
    # pay, and its measured CPU time would count them); unknown counts as long.
    assert warm_executors(1, 2, [2]) == 1 and warm_executors(1, 2, [16]) == 2 and warm_executors(1, 2, [None]) == 2
    assert warm_executors(2, 8, [2, 16]) == 5 and warm_executors(3, 2, [1, 1, 9]) == 2


def test_a_run_of_few_segments_takes_no_warm_helper(tmp_path: Path) -> None:
    from computewatch.verifier import _examine
    from computewatch.verifier.cluster import WARM_HELPERS_FROM, segments_hint

    class _Pool:
        def session(self, **_: object) -> object:
            raise AssertionError("a warm helper was taken")

    plan = types.SimpleNamespace(warm=_Pool(), run=types.SimpleNamespace(world_size=1), segments=[0] * (WARM_HELPERS_FROM - 1), executors=2)
    assert _examine._warm_helpers(plan, None, 1) == []  # type: ignore[arg-type]
    (tmp_path / "checkpoints").mkdir()
    assert segments_hint(tmp_path) is None  # no index: unknown
    (tmp_path / "checkpoints" / "rank-00000.json").write_text('{"checkpoints": [{"step": 0}, {"step": 4}, {"step": 8}]}')
    assert segments_hint(tmp_path) == 2


def test_on_ray_each_run_is_one_task_with_one_executor_and_no_local_warm_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    from computewatch.verifier.cluster import TrustedCluster

    asked: list[dict] = []

    class _Ray:  # stands in for the ray package: tasks run here, in order
        @staticmethod
        def is_initialized() -> bool:
            return True

        @staticmethod
        def remote(**options: object):
            asked.append(options)
            return lambda fn: types.SimpleNamespace(remote=lambda item: (fn, item))

        @staticmethod
        def get(ref: tuple) -> object:
            fn, item = ref
            return fn(item)

    monkeypatch.setitem(sys.modules, "ray", _Ray)
    cluster = TrustedCluster(workers=4, ray_address="ray://head:10001", sandbox=False, warm=object())  # type: ignore[arg-type]
    assert cluster.warm is None  # started processes here are of no use to a task on another node
    assert cluster.executors_per_run(1) == 1 and TrustedCluster(workers=4, sandbox=False).executors_per_run(1) == 4
    assert TrustedCluster(workers=4, sandbox=False).executors_per_run(3) == 1
    assert cluster.map(lambda x: x * 10, [1, 2, 3]) == [10, 20, 30]
    assert asked == [{"num_cpus": 1}]


def test_a_run_examined_on_a_copy_still_explains_its_snapshots(small_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A Ray task examines a pickled copy of the run's plan: what it finds about each logged
    # snapshot must come back in its result (it once stayed in the copy, and every honest run
    # verified on Ray was a violation: "no checkpoint segment covers it").
    import pickle

    from _runs import failed, run_verify

    class _Ray:  # tasks run here, on pickled copies of their argument and result, as on a cluster
        @staticmethod
        def is_initialized() -> bool:
            return True

        @staticmethod
        def remote(**options: object):
            return lambda fn: types.SimpleNamespace(remote=lambda item: pickle.dumps(fn(pickle.loads(pickle.dumps(item)))))

        @staticmethod
        def get(ref: bytes) -> object:
            return pickle.loads(ref)

    monkeypatch.setitem(sys.modules, "ray", _Ray)
    doc = run_verify(small_run, segments="all", ray_address="ray://copies")
    assert doc["verdict"] == "compliant", failed(doc)
    assert doc["snapshots"]["logged"] > 0 and doc["snapshots"]["explained"] == doc["snapshots"]["logged"]


def test_a_local_ray_cluster_outlives_the_thread_that_connects() -> None:
    # Ray ties a local cluster's processes to the thread that started them: the connecting
    # thread must stay (it once ended at once, and the cluster died under the first task).
    from computewatch.verifier.ray_connect import connect_ray

    started_in: list[threading.Thread] = []

    class _Ray:
        @staticmethod
        def init(**_: object) -> None:
            started_in.append(threading.current_thread())

    connect_ray(_Ray, "local", timeout=10)
    (thread,) = started_in
    assert thread is not threading.current_thread()
    time.sleep(0.2)
    assert thread.is_alive() and thread.daemon  # kept, and never blocks the interpreter's exit
    connect_ray(_Ray, "ray://head:10001", timeout=10)
    started_in[-1].join(5)
    assert not started_in[-1].is_alive()  # a remote cluster's connection thread ends


def test_confining_an_executor_never_raises_a_limit_it_already_has() -> None:
    # A cold executor starts with its run's limits and is confined to them again; a count of the
    # caller's processes taken later may be higher: the limit must stay, not fail to rise.
    code = ("import resource\n"
            "from computewatch.verifier.sandbox import Limits\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))\n"
            "Limits(cpu_seconds=10**6, address_space=1 << 40, file_size=1 << 30, processes=1 << 20).tighten()\n"
            "assert resource.getrlimit(resource.RLIMIT_FSIZE) == (1 << 20, 1 << 20)\n"
            "Limits(cpu_seconds=10**6, address_space=1 << 40, file_size=1 << 10, processes=1 << 20).tighten()\n"
            "assert resource.getrlimit(resource.RLIMIT_FSIZE) == (1 << 10, 1 << 10)\n"
            "assert resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
