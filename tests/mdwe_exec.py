"""Run a command as systemd's ``MemoryDenyWriteExecute=yes`` would: ``python
tests/mdwe_exec.py CMD [ARG ...]``.

systemd (252, Debian 12) implements the setting as a seccomp filter; this installs the same
rules, then execs the command, which keeps them: ``mmap`` asking for both ``PROT_WRITE`` and
``PROT_EXEC``, ``mprotect``/``pkey_mprotect`` adding ``PROT_EXEC``, and ``shmat`` with
``SHM_EXEC`` fail with ``EPERM``. It lets the tests check that CPython and the compiled
libraries Mimir loads (pyoxigraph, pydantic-core, uvloop …) run under the setting without
systemd as PID 1. Linux on x86-64 or arm64 only.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys

# Syscall numbers (mmap, mprotect, pkey_mprotect, shmat) and seccomp's audit arch values.
_ARCHES = {
    "x86_64": (0xC000003E, {"mmap": 9, "mprotect": 10, "pkey_mprotect": 329, "shmat": 30}),
    "aarch64": (0xC00000B7, {"mmap": 222, "mprotect": 226, "pkey_mprotect": 288, "shmat": 196}),
}
_PROT_WRITE, _PROT_EXEC, _SHM_EXEC = 0x2, 0x4, 0o100000
_LD_ABS, _JEQ, _AND, _RET = 0x20, 0x15, 0x54, 0x06  # BPF_LD|W|ABS, JMP|JEQ|K, ALU|AND|K, RET|K
_ALLOW, _EPERM = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM
_NR, _ARCH, _ARG2 = 0, 4, 32  # offsets in struct seccomp_data (arg 2's low half, little-endian)


def _program(arch: int, nr: dict[str, int]) -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k), with jumps resolved from labels."""
    checks = [("mmap", _PROT_WRITE | _PROT_EXEC), ("mprotect", _PROT_EXEC)]
    checks += [("pkey_mprotect", _PROT_EXEC), ("shmat", _SHM_EXEC)]
    code: list[tuple[int, object, object, int]] = [
        (_LD_ABS, 0, 0, _ARCH),
        (_JEQ, 0, "allow", arch),
        (_LD_ABS, 0, 0, _NR),
    ]
    code += [(_JEQ, f"check_{name}", 0, nr[name]) for name, _ in checks]
    code.append((_RET, 0, 0, _ALLOW))
    labels: dict[str, int] = {}
    for name, mask in checks:
        labels[f"check_{name}"] = len(code)
        code += [(_LD_ABS, 0, 0, _ARG2), (_AND, 0, 0, mask), (_JEQ, "deny", "allow", mask)]
    labels["deny"] = len(code)
    code.append((_RET, 0, 0, _EPERM))
    labels["allow"] = len(code)
    code.append((_RET, 0, 0, _ALLOW))

    def offset(target: object, at: int) -> int:
        return labels[target] - at - 1 if isinstance(target, str) else int(target)  # type: ignore[arg-type]

    return [(c, offset(jt, i), offset(jf, i), k) for i, (c, jt, jf, k) in enumerate(code)]


def deny_write_execute() -> None:
    """Install the filter on this process (and everything it execs)."""
    try:
        arch, numbers = _ARCHES[platform.machine()]
    except KeyError:
        raise SystemExit(f"mdwe_exec: unsupported machine {platform.machine()}") from None
    program = _program(arch, numbers)
    raw = b"".join(struct.pack("HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(raw, len(raw))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(program), ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    deny_write_execute()
    os.execvp(sys.argv[1], sys.argv[1:])
