"""Custom programs are audited, not trusted: a static scan of a training program's files.

A trusted template (formats/templates.py) is the Verifier's own code and is not scanned. A
custom program is the Prover's code, run in the executor's sandbox; what it does beyond what a
template would is listed in the report and a policy can ban any of it (docs/rules.md,
``program.uses``). The scan reads the files as text and walks their Python syntax trees; it
never imports or runs them. Categories (`USES`):

* ``file``: opening, reading, writing or removing files (``open``, ``read_bytes``, ``shutil`` ...);
* ``socket``: network modules (``socket``, ``ssl``, ``http``, ``urllib``, ``requests`` ...);
* ``process``: other processes (``subprocess``, ``multiprocessing``, ``os.system``, ``os.fork`` ...);
* ``dispatch``: torch dispatch, function-override or profiler machinery (``TorchDispatchMode``,
  ``_DisableTorchDispatch``, ``__torch_function__``, ``torch.profiler``, ``torch.library`` ...):
  what a program needs to hide work from a FLOP counter or a profiler;
* ``dynamic``: code the scan cannot see (``exec``, ``eval``, ``compile``, ``__import__``,
  ``importlib``, ``ctypes``, ``cffi``, ``marshal``, ``pickle``, C++ extensions);
* ``environment``: reading the machine it runs on (``os.environ``, ``getenv``, thread counts,
  ``platform``, clocks): a program that behaves differently under the Verifier's calibration
  replays reads this;
* ``blob``: a string or bytes literal, or a non-Python file, above `BLOB_BYTES` (embedded
  weights, text to train on instead of the committed samples);
* ``verifier``: references to computewatch's own modules (the Verifier, the chip, the formats).

A scan is a list of facts, not a proof: code can be obfuscated past any static reading
(``dynamic`` then says so). Templates are the answer where that matters.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BLOB_BYTES", "USES", "ScanFinding", "program_facts", "scan_program"]

BLOB_BYTES = 4096  # a literal or data file this long is more than configuration
USES = ("file", "socket", "process", "dispatch", "dynamic", "environment", "blob", "verifier")
_MAX_LISTED = 50

_MODULES = {
    "file": {"shutil", "tempfile", "glob", "fcntl", "mmap", "fileinput", "zipfile", "tarfile", "sqlite3"},
    "socket": {"socket", "ssl", "http", "urllib", "urllib3", "requests", "httpx", "aiohttp", "ftplib", "smtplib", "websocket", "websockets", "xmlrpc", "socketserver", "asyncio"},
    "process": {"subprocess", "multiprocessing", "pty", "concurrent", "threading", "signal"},
    "dynamic": {"importlib", "ctypes", "cffi", "marshal", "pickle", "dill", "cloudpickle", "runpy", "code", "codeop"},
    "environment": {"platform", "time", "psutil", "resource", "getpass"},
}
_NAMES = {
    "file": {"open", "read_bytes", "read_text", "write_bytes", "write_text", "unlink", "rmtree", "remove", "rename", "replace", "listdir", "scandir", "walk", "makedirs", "mkdir", "chmod", "truncate"},
    "process": {"system", "popen", "fork", "forkpty", "kill", "killpg", "execv", "execve", "execvp", "execl", "spawnv", "spawnl", "posix_spawn", "Popen", "Process"},
    "dispatch": {"TorchDispatchMode", "TorchFunctionMode", "_DisableTorchDispatch", "DisableTorchFunction", "DisableTorchFunctionSubclass", "_disabled_torch_dispatch_impl", "_disabled_torch_function_impl", "__torch_dispatch__", "__torch_function__", "_python_dispatch", "_set_torch_dispatch_mode", "_pop_torch_dispatch_stack", "_push_on_torch_dispatch_stack", "_EnablePythonDispatcher", "_DisablePythonDispatcher", "FlopCounterMode", "profiler", "_ExcludeDispatchKeyGuard", "_AutoDispatchBelowAutograd", "overrides", "library", "register_kernel", "impl_abstract", "_dispatch_tls_set_dispatch_key_excluded"},
    "dynamic": {"exec", "eval", "compile", "__import__", "load_library", "cpp_extension", "load_inline", "globals", "__builtins__", "getattr", "setattr", "__dict__", "__code__", "__globals__"},
    "environment": {"environ", "getenv", "get_num_threads", "set_num_threads", "get_num_interop_threads", "cpu_count", "sched_getaffinity", "gethostname", "getpid", "perf_counter", "monotonic", "time_ns", "process_time", "uname", "get_cpu_capability"},
}
# getattr/setattr are listed under `dynamic` because attribute names built at run time hide what
# the code touches from this scan.


@dataclass(frozen=True)
class ScanFinding:
    use: str
    file: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.use}: {self.what}"


def _root(name: str) -> str:
    return name.split(".", 1)[0]


def _module_uses(module: str) -> list[str]:
    out = [use for use, names in _MODULES.items() if _root(module) in names]
    if module == "os.path":
        return out
    if _root(module) == "computewatch":
        out.append("verifier")
    if module.startswith(("torch.profiler", "torch.autograd.profiler", "torch.utils._python_dispatch", "torch.overrides", "torch.library", "torch.utils.flop_counter", "torch._C._profiler")):
        out.append("dispatch")
    if module.startswith("torch.utils.cpp_extension"):
        out.append("dynamic")
    return out


def _scan_python(rel: str, text: str) -> tuple[list[ScanFinding], set[str]]:
    findings: list[ScanFinding] = []
    imports: set[str] = set()
    try:
        tree = ast.parse(text, filename=rel)
    except SyntaxError as exc:
        return [ScanFinding("dynamic", rel, exc.lineno or 0, "not valid Python: the scan cannot read it")], imports
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if isinstance(node, ast.ImportFrom) and node.level:
                continue  # the program's own files
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            imports.add(_root(names[0]))
            for name in names:
                findings += [ScanFinding(use, rel, line, f"imports {name}") for use in _module_uses(name)]
            if isinstance(node, ast.Import):
                imports.update(_root(n) for n in names)
        elif isinstance(node, (ast.Name, ast.Attribute)):
            name = node.id if isinstance(node, ast.Name) else node.attr
            for use, used in _NAMES.items():
                if name in used:
                    findings.append(ScanFinding(use, rel, line, f"uses {name}"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            if len(node.value) > BLOB_BYTES:
                findings.append(ScanFinding("blob", rel, line, f"a {len(node.value)}-character literal"))
            if isinstance(node.value, str) and "computewatch." in node.value:
                findings.append(ScanFinding("verifier", rel, line, "names a computewatch module in a string"))
    return findings, imports


def scan_program(files: Mapping[str, bytes]) -> dict[str, Any]:
    """What a custom program's files do, by category: {"uses": [categories], "imports":
    [top-level modules], "findings": ["file:line: use: what", ...] (first 50), "counts": {use: n}}."""
    findings: list[ScanFinding] = []
    imports: set[str] = set()
    for rel in sorted(files):
        data = files[rel]
        if not rel.endswith(".py"):
            if len(data) > BLOB_BYTES:
                findings.append(ScanFinding("blob", rel, 0, f"a {len(data)}-byte data file"))
            continue
        found, names = _scan_python(rel, data.decode("utf-8", errors="replace"))
        findings += found
        imports |= names
    unique = sorted(dict.fromkeys(findings), key=lambda f: (f.file, f.line, f.use, f.what))
    counts = {use: sum(1 for f in unique if f.use == use) for use in USES}
    return {
        "uses": [use for use in USES if counts[use]],
        "imports": sorted(i for i in imports if i and i != "__future__"),
        "counts": {k: v for k, v in counts.items() if v},
        "findings": [str(f) for f in unique[:_MAX_LISTED]],
    }


def program_facts(precommitment: Any, files: Mapping[str, bytes] | None) -> dict[str, Any]:
    """What the report and the policy (``program.*``) say about a run's program: its kind
    ("template": the Verifier's own pinned code; "custom": the Prover's, scanned), the template's
    name, and for a custom program the scan."""
    from computewatch.formats.templates import template_for

    named = getattr(precommitment, "program_template", None)
    found = template_for(precommitment.program_entry, precommitment.code_digest)
    if named is not None or found is not None:
        return {"kind": "template", "template": named or (found.name if found else ""), "uses": [], "imports": [], "counts": {}, "findings": []}
    scan = scan_program(files or {})
    return {"kind": "custom", "template": "", **scan}
