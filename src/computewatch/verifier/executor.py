"""The executor: the only process that imports and runs the Prover's training program.

It runs inside the sandbox (`computewatch.verifier.sandbox`), started once per run by the judge
(`computewatch.verifier.cluster.ExecutorSession`) and kept warm for all of that run's jobs. It
knows only what the judge staged read-only under its inputs folder (the program's files, the
starting checkpoints, the committed sample bytes, full weights for loss evaluations) and what the
`Hello` message says (entry point, code digest, precommitted hyperparameters, the run's own
committed seed, world size, strategy, thread count, and the trusted template the run names, whose
pinned copy from the Verifier's own installation then runs instead of the staged files). It never sees an expected end checkpoint,
a logged digest, a recorded loss or learning rate, another run, a key or the Verifier's secret.

API (one JSON line per message on stdin, one reply line on the pipe `--reply-fd` names; protocol.py):
  Confine                      -> (none): the run's resource limits, set before anything else is read
  Hello                        -> Ready(batch_size)
  ProgramJob(steps, settings_at) -> ProgramReply: W0 file, lr of every step, optimizer and
                                  scheduler settings at the given step counts
  SamplesJob(ids)              -> SamplesReply: the sample bytes the program rebuilds
  ReplayJob(start, start_files, batches, keep, final, ...)
                               -> ReplayReply: "from this state, run these steps, return the
                                  states after steps S": per rank, the parameters after every
                                  step in `keep` and the full model and optimizer state after
                                  the last step when `final`, as safetensors files in scratch
  LossesJob(weights, ids)      -> LossesReply: per-sample losses of the full model

A caller that needs one step replayed (a spot check) sends a ReplayJob with one batch and
`keep=[start + 1]`; `computewatch.verifier.replay_steps(staged_run, start, count, keep)` does
exactly that from the judge's side (a fresh sandboxed executor, committed samples checked first)
and returns the tensors for the caller to compare. Everything in a reply is a claim the judge checks; the program may print
anything to stdout or stderr, which nobody reads.

A run of W > 1 ranks gets W rank processes (this module with `--rank`), started inside the same
sandbox at the first replay and kept for the run's later replays; they talk gloo over loopback.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["main"]

_PR_SET_NO_NEW_PRIVS = 38


def _drop_privileges(uid: int) -> None:
    """Become a fresh unprivileged user (no groups, no capabilities, no way back)."""
    if os.geteuid() != 0:
        return
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.geteuid() == 0 or os.getuid() == 0:  # pragma: no cover - the kernel refused
        raise SystemExit("could not drop privileges")
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


class _Channel:
    def __init__(self, reader: BinaryIO, writer: BinaryIO) -> None:
        self.reader, self.writer = reader, writer

    def receive(self, *types: type) -> Any:
        from computewatch.verifier.protocol import decode

        line = self.reader.readline()
        if not line:
            raise SystemExit(0)  # the judge closed the channel: done
        return decode(line, *types)

    def send(self, message: Any) -> None:
        from computewatch.verifier.protocol import encode

        self.writer.write(encode(message))
        self.writer.flush()


def _json_norm(obj: Any) -> Any:
    if isinstance(obj, (list, tuple)):
        return [_json_norm(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _json_norm(v) for k, v in obj.items()}
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return obj
    return repr(obj)


class _Executor:
    def __init__(self, args: argparse.Namespace, channel: _Channel) -> None:
        from computewatch.formats.program import deterministic_cpu, load_program, read_program_files
        from computewatch.verifier.protocol import Hello

        self.args = args
        self.inputs, self.scratch = Path(args.inputs), Path(args.scratch)
        self.channel = channel
        self.hello: Hello = channel.receive(Hello)
        deterministic_cpu(self.hello.threads)
        files = read_program_files(self.inputs / "program")
        self._loaded = load_program(files, self.hello.entry, self.hello.code_digest, self.hello.template)
        loaded = self._loaded.__enter__()
        data_dir = self.inputs / "data" if self.hello.data_dir else None
        self.program = loaded.make(self.hello.hyperparameters, data_dir)
        self.seed = bytes.fromhex(self.hello.seed)
        self.ranks: list[tuple[subprocess.Popen[bytes], _Channel]] = []

    def folder(self, job: int) -> Path:
        path = self.scratch / f"job-{job}"
        path.mkdir(exist_ok=True)
        return path

    # ------------------------------------------------------------------------------ jobs
    def program_job(self, job: Any) -> Any:
        from computewatch.formats.seed import init_generator
        from computewatch.verifier._replay import advance_scheduler, save_tensors
        from computewatch.verifier.protocol import ProgramReply

        folder = self.folder(job.job)
        w0 = self.program.build_model(init_generator(self.seed))
        name = save_tensors({k: v for k, v in w0.state_dict().items()}, folder / "w0.safetensors")
        model = self.program.build_model(init_generator(self.seed))
        optimizer = self.program.build_optimizer(model)
        scheduler = self.program.build_scheduler(optimizer)
        want = set(job.settings_at)
        lr: list[float] = []
        settings: dict[int, dict[str, Any]] = {}
        for t in range(job.steps + 1):
            if t in want:
                groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.state_dict()["param_groups"]]
                sched = scheduler.state_dict() if scheduler is not None else None
                settings[t] = {"param_groups": _json_norm(groups), "scheduler": _json_norm(sched)}
            if t == job.steps:
                break
            lr.append(float(optimizer.param_groups[0]["lr"]))
            advance_scheduler(scheduler, 1)
        return ProgramReply("program-reply", job.job, f"job-{job.job}/{name}", lr, [settings.get(t, {}) for t in job.settings_at])

    def samples_job(self, job: Any) -> Any:
        from computewatch.verifier.protocol import SamplesReply

        folder = self.folder(job.job)
        lengths = []
        with open(folder / "samples.bin", "wb") as fh:
            for i in job.ids:
                data = bytes(self.program.sample(i))
                fh.write(data)
                lengths.append(len(data))
        return SamplesReply("samples-reply", job.job, f"job-{job.job}/samples.bin", lengths)

    def losses_job(self, job: Any) -> Any:
        import torch
        from safetensors.torch import load_file

        from computewatch.formats.seed import init_generator
        from computewatch.verifier._replay import staged_samples
        from computewatch.verifier.protocol import LossesReply

        samples = staged_samples(self.inputs, job.samples, job.sample_ids, job.lengths)
        out: list[list[float | None]] = []
        for weights in job.weights:
            model = self.program.build_model(init_generator(self.seed))
            full = load_file(str(self.inputs / weights))
            with torch.no_grad():
                for name, p in model.named_parameters():
                    p.copy_(full[name])
            model.eval()
            with torch.no_grad():
                out.append([float(self.program.loss(model, self.program.collate([samples[i]]))) for i in job.sample_ids])
        return LossesReply("losses-reply", job.job, out)

    def replay_job(self, job: Any) -> Any:
        from computewatch.verifier._replay import replay_rank
        from computewatch.verifier.flops import count_flops
        from computewatch.verifier.protocol import ReplayReply

        folder = self.folder(job.job)
        world = self.hello.world_size
        if world == 1:
            r = replay_rank(self.program, self.seed, self.hello.strategy, 0, 1, job, self.inputs, folder, count_flops)
            files = [[f"job-{job.job}/{f}" for f in r["files"]]]
            return ReplayReply("replay-reply", job.job, r["losses"], r["lr"], r["rng"], files, r["flops"], r.get("ops"))
        if not self.ranks:
            self._start_ranks()
        line = json.dumps({"job": job.__dict__}).encode() + b"\n"
        for proc, _ in self.ranks:
            assert proc.stdin is not None
            proc.stdin.write(line)
            proc.stdin.flush()
        results = [json.loads(chan.reader.readline() or b"null") for _, chan in self.ranks]
        if any(not isinstance(r, dict) for r in results):
            raise SystemExit("a rank process ended during the job")
        flops = [r["flops"] for r in results if r.get("flops")]
        total = None
        if flops:
            total = {"total": sum(f["total"] for f in flops), "matmul": sum(f["matmul"] for f in flops),
                     "other": sum(f["other"] for f in flops), "complete": all(f["complete"] for f in flops),
                     "unknown_ops": {k: sum(f["unknown_ops"].get(k, 0) for f in flops) for f in flops for k in f["unknown_ops"]}}
        files = [[f"job-{job.job}/{f}" for f in r["files"]] for r in results]
        first = results[0]
        return ReplayReply("replay-reply", job.job, first["losses"], first["lr"], first["rng"], files, total, first.get("ops"))

    def _start_ranks(self) -> None:
        from computewatch.verifier.protocol import encode

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        hello = encode(self.hello)
        for rank in range(self.hello.world_size):
            read, write = os.pipe()
            cmd = [sys.executable, "-s", "-m", "computewatch.verifier.executor", "--inputs", str(self.inputs), "--scratch", str(self.scratch),
                   "--rank", str(rank), "--port", str(port)]
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    pass_fds=(write,), env={**os.environ, "COMPUTEWATCH_REPLY_FD": str(write)})
            os.close(write)
            assert proc.stdin is not None
            proc.stdin.write(hello)
            proc.stdin.flush()
            self.ranks.append((proc, _Channel(os.fdopen(read, "rb"), open(os.devnull, "wb"))))  # noqa: SIM115 (lives with the rank)

    def serve(self) -> None:
        from computewatch.verifier.protocol import LossesJob, ProgramJob, Ready, ReplayJob, SamplesJob

        self.channel.send(Ready("ready", int(self.program.batch_size)))
        handlers = {ProgramJob: self.program_job, SamplesJob: self.samples_job, ReplayJob: self.replay_job, LossesJob: self.losses_job}
        while True:
            job = self.channel.receive(*handlers)
            self.channel.send(handlers[type(job)](job))


def _rank_main(args: argparse.Namespace) -> None:
    """One rank of a distributed replay: the program, gloo over loopback, jobs from the coordinator."""
    import torch.distributed as dist

    from computewatch.formats.program import deterministic_cpu, load_program, read_program_files
    from computewatch.verifier._replay import replay_rank
    from computewatch.verifier.flops import count_flops
    from computewatch.verifier.protocol import Hello, ReplayJob, decode

    inputs, scratch = Path(args.inputs), Path(args.scratch)
    reply = os.fdopen(int(os.environ["COMPUTEWATCH_REPLY_FD"]), "wb", buffering=0)
    hello: Hello = decode(sys.stdin.buffer.readline(), Hello)
    deterministic_cpu(hello.threads)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(args.port)
    dist.init_process_group("gloo", rank=args.rank, world_size=hello.world_size)
    with load_program(read_program_files(inputs / "program"), hello.entry, hello.code_digest, hello.template) as loaded:
        program = loaded.make(hello.hyperparameters, inputs / "data" if hello.data_dir else None)
        seed = bytes.fromhex(hello.seed)
        for line in sys.stdin.buffer:
            body = json.loads(line)["job"]
            job = ReplayJob(**body)
            folder = scratch / f"job-{job.job}"
            folder.mkdir(exist_ok=True)
            result = replay_rank(program, seed, hello.strategy, args.rank, hello.world_size, job, inputs, folder, count_flops)
            reply.write(json.dumps(result).encode() + b"\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="computewatch.verifier.executor")
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--scratch", required=True)
    parser.add_argument("--uid", type=int)
    parser.add_argument("--rank", type=int)
    parser.add_argument("--port", type=int)
    parser.add_argument("--reply-fd", type=int)
    args = parser.parse_args(argv)
    if args.uid is not None:
        _drop_privileges(args.uid)
    os.makedirs(os.environ.get("TMPDIR") or Path(args.scratch) / "tmp", exist_ok=True)
    if args.rank is not None:
        _rank_main(args)
        return
    _warm_up()
    channel = _Channel(sys.stdin.buffer, os.fdopen(args.reply_fd, "wb", buffering=0))
    _confine(channel)
    _Executor(args, channel).serve()


def _warm_up() -> None:
    """Import what every job needs before the judge has anything to say (a warm executor waits
    here for its run): torch, and torch._dynamo, which every torch optimizer imports on
    construction (`torch.optim` wraps its methods for the compiler), so it costs the same here
    as at the first job; the replay and the executor's own modules. Nothing of the Prover's."""
    import torch._dynamo  # noqa: F401
    import safetensors.torch  # noqa: F401

    import computewatch.formats.checkpoint
    import computewatch.formats.program
    import computewatch.verifier._replay
    import computewatch.verifier.flops  # noqa: F401


def _confine(channel: _Channel) -> None:
    """The run's resource limits, set on this process (and so on everything it starts) before
    the Hello names the Prover's program."""
    from computewatch.verifier.protocol import Confine
    from computewatch.verifier.sandbox import Limits

    limits: Confine = channel.receive(Confine)
    Limits(limits.cpu_seconds, limits.address_space, limits.file_size, limits.processes).tighten()


if __name__ == "__main__":
    main()
