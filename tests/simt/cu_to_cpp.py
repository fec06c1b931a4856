#!/usr/bin/env python3
"""Rewrites a CUDA source for the SIMT emulator (tests/simt/simt.h): g++ compiles the result.

Three rewrites and one addition, nothing else changes (line numbers are kept, and a #line directive points
compiler messages at the original file):
  kernel<<<grid, block[, smem[, stream]]>>>(args);
      -> ::accum::simt::launch({grid, block, smem, stream}, kernel or nullptr,
                               [=] { kernel(args); });
  extern __shared__ [__align__(n)] T name[];
      -> T* name = reinterpret_cast<T*>(::accum::simt::dynamic_shared());
  __shared__ alignas(n) T x[...];   (prelude.h: __shared__ is `static thread_local`)
      -> alignas(n) __shared__ T x[...]; ::accum::simt::fresh_shared(x, sizeof(x));
         (C++ wants the attribute first; the call poisons x once per block)

usage: cu_to_cpp.py IN.cu OUT.cpp
"""
import re
import sys

EXTERN_SHARED = re.compile(
    r"extern\s+__shared__\s+(?:__align__\(\s*\d+\s*\)\s+)?([A-Za-z_][\w:<> ]*?)\s+(\w+)\s*\[\s*\]\s*;")


def match_back_angle(text, close):
    """Index of the '<' that opens the template argument list ending at text[close] == '>'."""
    depth = 0
    for i in range(close, -1, -1):
        if text[i] == ">":
            depth += 1
        elif text[i] == "<":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError("unbalanced template arguments before <<<")


def match_forward(text, start, open_ch, close_ch):
    """Index just past the bracket that closes the one at text[start] == open_ch."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == open_ch:
            depth += 1
        elif text[i] == close_ch:
            depth -= 1
            if depth == 0:
                return i + 1
    raise ValueError(f"unbalanced {open_ch}{close_ch}")


def rewrite_launches(text):
    out = []
    pos = 0
    while True:
        launch = text.find("<<<", pos)
        if launch < 0:
            out.append(text[pos:])
            return "".join(out)
        # The kernel expression: an identifier, maybe qualified, maybe with template arguments.
        end = launch
        while text[end - 1].isspace():
            end -= 1
        begin = end
        if text[begin - 1] == ">":
            begin = match_back_angle(text, begin - 1)
        while begin > 0 and (text[begin - 1].isalnum() or text[begin - 1] in "_:"):
            begin -= 1
        kernel = text[begin:end]
        if not kernel or not re.match(r"[A-Za-z_:]", kernel):
            raise ValueError(f"no kernel name before <<< at offset {launch}")
        config_end = text.find(">>>", launch)
        config = text[launch + 3:config_end]
        args_open = config_end + 3
        while text[args_open].isspace():
            args_open += 1
        if text[args_open] != "(":
            raise ValueError(f"no argument list after >>> at offset {config_end}")
        args_close = match_forward(text, args_open, "(", ")")
        args = text[args_open:args_close]
        original = text[begin:args_close]
        # The kernel's address keys its cudaFuncSetAttribute limits; only launches with
        # dynamic shared memory need it (a kernel template whose arguments are deduced from
        # the call has no address before the call).
        parts = [part.strip() for part in config.split(",")]
        key = kernel if len(parts) >= 3 and parts[2] not in ("0", "0u") else "nullptr"
        replacement = (f"::accum::simt::launch(::accum::simt::LaunchConfig{{{config}}}, {key}, "
                       f"[=] {{ {kernel}{args}; }})")
        # Keep the line count: the newlines of the original go after the replacement.
        replacement = replacement.replace("\n", " ") + "\n" * original.count("\n")
        out.append(text[pos:begin])
        out.append(replacement)
        pos = args_close


SHARED_ALIGNED = re.compile(r"__shared__\s+((?:alignas|__align__)\(\s*\d+\s*\))")


STATIC_SHARED = re.compile(
    r"((?:alignas\(\s*\d+\s*\)\s+)?__shared__\s+[\w:<>]+\s+)([^;=()]+);")


def poison_static_shared(text):
    """After each `__shared__ T a[..], b[..];` (prelude.h: static thread_local), a call
    that fills the arrays with 0xFF the first time a thread of a new block gets there,
    so a block reading what it never wrote sees NaN, not the previous block's values."""
    def add_calls(m):
        names = [d.strip().split("[")[0].strip() for d in m.group(2).split(",")]
        calls = "".join(f" ::accum::simt::fresh_shared({n}, sizeof({n}));" for n in names)
        return f"{m.group(1)}{m.group(2)};{calls}"
    return STATIC_SHARED.sub(add_calls, text)


def rewrite_shared(text):
    text = EXTERN_SHARED.sub(
        lambda m: f"{m.group(1)}* {m.group(2)} = "
                  f"reinterpret_cast<{m.group(1)}*>(::accum::simt::dynamic_shared());",
        text)
    return poison_static_shared(SHARED_ALIGNED.sub(lambda m: f"{m.group(1)} __shared__", text))


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    source, target = sys.argv[1], sys.argv[2]
    with open(source, encoding="utf-8") as f:
        text = f.read()
    text = rewrite_shared(rewrite_launches(text))
    with open(target, "w", encoding="utf-8") as f:
        f.write(f'#line 1 "{source}"\n{text}')


if __name__ == "__main__":
    main()
