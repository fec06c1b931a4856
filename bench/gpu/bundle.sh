#!/usr/bin/env bash
# bench/gpu/bundle.sh — the `gpu` tests that need the full build (MPI, the worker) on a GPU
# host that has CUDA but none of Debian's libraries and no MPI.
#
#   bench/gpu/bundle.sh pack BUILD_DIR          on the build machine (Debian 12)
#       Writes build-lease/bundle.tar.xz: the gpu-label test programs of BUILD_DIR and the
#       worker they start, the ctest files that define those tests (same absolute paths),
#       every shared library they load that is not glibc's or CUDA's (ldd), and Open MPI
#       with PMIx (libraries, plugins, orterun/orted, help texts), relocatable through
#       OPAL_PREFIX and PMIX_INSTALL_PREFIX.
#   bench/gpu/bundle.sh test [BUILD_DIR] [ctest args]   on the GPU host
#       Unpacks it under build-lease/sysroot, puts the programs and ctest files back at
#       the BUILD_DIR path they were packed from, points PATH, LD_LIBRARY_PATH and the two
#       prefixes at the bundle (NCCL: the host's, e.g. PyTorch's nvidia-nccl wheel), checks
#       MPI (a singleton and mpirun -np 2) and the worker's start, and runs
#       `ctest --test-dir BUILD_DIR -L gpu` (or the given ctest arguments).
#   bench/gpu/bundle.sh check BUILD_DIR [ctest args]  on the build machine
#       The same as test, with Debian's Open MPI and PMIx hidden (a private mount
#       namespace, `unshare -m`), and every library a test process loads checked to come
#       from the bundle, glibc or CUDA (LD_DEBUG=files): a file the bundle lacks fails here,
#       not on the GPU host.
# The worker's NCCL, cuBLASLt and CUDA runtime are not packed (208 MB and more): the GPU
# host's CUDA 13 provides them.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MULTIARCH=x86_64-linux-gnu
OMPI_DIR=/usr/lib/$MULTIARCH/openmpi
PMIX_DIR=/usr/lib/$MULTIARCH/pmix2
BUNDLE="$ROOT/build-lease/bundle.tar.xz"
SYSROOT="$ROOT/build-lease/sysroot"
# Loaded from the host: glibc, the GPU driver, CUDA's libraries.
HOST_LIBS='^(linux-vdso|ld-linux-x86-64|libc|libm|libdl|libpthread|librt|libutil|libresolv|libcuda|libnvidia|libcudart|libcublas|libcublasLt|libnccl)\.'
PROGRAMS=(gpu_test comm_test gpu_trainer_test gpu_ranks_test accum-worker)

die() { echo "bundle.sh: $*" >&2; exit 1; }

# The non-host shared libraries `file...` need, transitively (ldd resolves the closure).
library_closure() {
  ldd "$@" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u |
    while read -r lib; do
      [[ "$(basename "$lib")" =~ $HOST_LIBS ]] || echo "$lib"
    done
}

pack() {
  local build="${1:?usage: bundle.sh pack BUILD_DIR}"
  build="$(cd "$build" && pwd)" || die "no build directory $1"
  for p in "${PROGRAMS[@]}"; do [[ -x "$build/bin/$p" ]] || die "$build/bin/$p missing: build first"; done
  local stage
  stage="$(mktemp -d)"
  trap 'rm -rf "$stage"' RETURN
  # Test programs and ctest's files, at their absolute paths under stage/tree.
  mkdir -p "$stage/tree"
  (cd / && find "${build#/}" -path '*/CMakeFiles' -prune -o \( -name CTestTestfile.cmake \
     -o -name '*_tests.cmake' -o -name '*_include.cmake' -o -name '*_labels.cmake' \) -print0 |
     tar cf - --null -T -) | tar xf - -C "$stage/tree" || die "cannot copy the ctest files"
  mkdir -p "$stage/tree/${build#/}/bin"
  for p in "${PROGRAMS[@]}"; do cp "$build/bin/$p" "$stage/tree/${build#/}/bin/"; done
  # Open MPI and PMIx as installed (relocated at run time), plus the mpirun programs.
  mkdir -p "$stage/sysroot/usr/lib/$MULTIARCH" "$stage/sysroot/usr/bin" "$stage/sysroot/usr/share" \
    "$stage/sysroot/lib"
  cp -a "$OMPI_DIR" "$PMIX_DIR" "$stage/sysroot/usr/lib/$MULTIARCH/"
  cp -a /usr/bin/orterun /usr/bin/orted "$stage/sysroot/usr/bin/"
  ln -s orterun "$stage/sysroot/usr/bin/mpirun"
  cp -a /usr/share/openmpi "$stage/sysroot/usr/share/"
  [[ -d /usr/share/pmix ]] && cp -a /usr/share/pmix "$stage/sysroot/usr/share/"
  # Every library those need: the programs', Open MPI's plugins' (best effort: a plugin
  # whose own dependency is absent is skipped by Open MPI, as on any host).
  local files=()
  for p in "${PROGRAMS[@]}"; do files+=("$build/bin/$p"); done
  files+=(/usr/bin/orterun /usr/bin/orted)
  while IFS= read -r -d '' so; do files+=("$so"); done < <(find "$OMPI_DIR" "$PMIX_DIR" -name '*.so*' -type f -print0)
  library_closure "${files[@]}" | while read -r lib; do
    case "$lib" in "$OMPI_DIR"/* | "$PMIX_DIR"/*) continue ;; esac  # already there
    cp -L "$lib" "$stage/sysroot/lib/"
  done
  echo "$build" > "$stage/build_dir"
  mkdir -p "$(dirname "$BUNDLE")"
  tar cJf "$BUNDLE" -C "$stage" tree sysroot build_dir || die "tar failed"
  echo "bundle.sh: $(du -h "$BUNDLE" | cut -f1) in $BUNDLE ($(find "$stage/sysroot/lib" -type f | wc -l) libraries)"
}

# Unpacks the bundle and sets the environment that makes it the MPI of this shell.
use_bundle() {
  [[ -s "$BUNDLE" ]] || die "$BUNDLE missing: run pack on the build machine"
  rm -rf "$SYSROOT" && mkdir -p "$SYSROOT" && tar xJf "$BUNDLE" -C "$SYSROOT" || die "unpack failed"
  # The test programs and ctest files go to their absolute paths (BUILD_DIR itself), but
  # never over files already there: where BUILD_DIR is a live build (the build machine,
  # `check`), its own, newer programs and test lists stay.
  cp -a -n "$SYSROOT/tree/." / || die "cannot place the test programs"
  local usr="$SYSROOT/sysroot/usr"
  export OPAL_PREFIX="$usr"
  export PMIX_INSTALL_PREFIX="$usr/lib/$MULTIARCH/pmix2"
  export PATH="$usr/bin:$PATH"
  local nccl_dir=""
  if ! ldconfig -p 2>/dev/null | grep -q 'libnccl.so.2 ' && [[ ! -e /usr/local/cuda/lib/libnccl.so.2 ]]; then
    nccl_dir="$(dirname "$(find / -xdev -name 'libnccl.so.2' -path '*nvidia*' 2>/dev/null | head -n1)")"
  fi
  export LD_LIBRARY_PATH="$SYSROOT/sysroot/lib:$usr/lib/$MULTIARCH/openmpi/lib:$usr/lib/$MULTIARCH/pmix2/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib${nccl_dir:+:$nccl_dir}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export OMPI_MCA_mca_base_component_show_load_errors=0
  # One node: shared memory between the ranks, nothing that needs UCX or InfiniBand.
  export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader OMPI_MCA_osc=^ucx
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  export ACCUM_MPIEXEC="$usr/bin/mpirun"  # the tests' mpirun (tests/distributed/mpi_job.cpp)
}

run_tests() {
  use_bundle
  local build
  build="$(cat "$SYSROOT/build_dir")"  # where pack found it: the programs are back there
  [[ "${1:-}" == "$build" ]] && shift
  # MPI first, on its own: a singleton (what the worker tests start) and mpirun with 2 ranks.
  local smoke='Backends/CommTest.AllReduceSumEqualsSumOverRanks/Mpi'
  "$build/bin/comm_test" --gtest_filter="$smoke" > "$SYSROOT/mpi_singleton.log" 2>&1
  echo "bundle.sh: MPI singleton exit $? ($(grep -E 'PASSED|FAILED' "$SYSROOT/mpi_singleton.log" | head -n1))"
  mpirun -np 2 --oversubscribe --bind-to none --mca btl self,vader "$build/bin/comm_test" \
    --gtest_filter="$smoke" > "$SYSROOT/mpirun.log" 2>&1
  echo "bundle.sh: mpirun -np 2 exit $? ($(grep -E 'PASSED|FAILED' "$SYSROOT/mpirun.log" | head -n1))"
  "$build/bin/accum-worker" --help > /dev/null 2>&1  # loads every library the worker needs
  echo "bundle.sh: accum-worker starts: exit $?"
  local args=("$@")
  [[ ${#args[@]} -eq 0 ]] && args=(-L gpu)
  # ctest: Debian's, or the one the pip cmake package puts beside python3.
  ctest --version > /dev/null 2>&1 ||
    PATH="$PATH:$(dirname "$(command -v python3 || echo /usr/bin/python3)")"
  if ctest --version > /dev/null 2>&1; then
    ctest --test-dir "$build" --output-on-failure "${args[@]}"
    return
  fi
  echo "bundle.sh: no ctest here: running the MPI-needing gpu test programs directly"
  local rc=0
  export ACCUM_BUILD_DIR="$build"
  "$build/bin/comm_test" --gtest_filter='NcclTest.*' || rc=1
  "$build/bin/gpu_trainer_test" || rc=1
  "$build/bin/gpu_ranks_test" || rc=1
  return $rc
}

check() {
  local build="${1:?usage: bundle.sh check BUILD_DIR [ctest args]}"
  shift
  build="$(cd "$build" && pwd)" || die "no build directory"
  local log
  log="$(mktemp)"
  # Hide Debian's Open MPI and PMIx in a private mount namespace, then run with the bundle.
  unshare -m --propagation private bash -c '
    set -e
    for d in '"$OMPI_DIR $PMIX_DIR"' /usr/share/openmpi /etc/openmpi /usr/lib/'"$MULTIARCH"'/hwloc \
        /usr/lib/'"$MULTIARCH"'/ucx; do
      [ -d "$d" ] && mount -t tmpfs none "$d"
    done
    for f in /usr/bin/orterun /usr/bin/orted /usr/bin/mpirun; do mount --bind /dev/null "$f"; done
    export LD_DEBUG=files LD_DEBUG_OUTPUT="'"$log"'"
    "'"$0"'" test "$@"
  ' bash "$build" "$@"
  local rc=$?
  # Every library loaded must come from the bundle, glibc, the driver or CUDA.
  local stray
  # Only the processes of the bundle's programs count (the GPU host brings its own ctest,
  # shell and tools): those whose libraries are "needed by" a program of BUILD_DIR/bin or
  # of the bundle.
  stray="$(for f in "$log".*; do
      grep -qE "needed by ($build/bin/|$SYSROOT/)" "$f" && cat "$f"
    done 2>/dev/null |
    awk '/calling init:/ {print $NF}' | sort -u |
    grep -v -e "^$SYSROOT/" -e '^/usr/local/cuda' |
    while read -r lib; do [[ "$(basename "$lib")" =~ $HOST_LIBS ]] || echo "$lib"; done)"
  rm -f "$log" "$log".*
  if [[ -n "$stray" ]]; then
    echo "bundle.sh: loaded from outside the bundle (the GPU host may lack them):"
    echo "$stray"
    return 1
  fi
  return $rc
}

case "${1:-}" in
  pack) shift; pack "$@" ;;
  test) shift; run_tests "$@" ;;
  check) shift; check "$@" ;;
  *) echo "usage: bench/gpu/bundle.sh pack BUILD_DIR | test [BUILD_DIR] [ctest args] | check BUILD_DIR [ctest args]" >&2; exit 2 ;;
esac
