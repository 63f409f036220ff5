#!/usr/bin/env bash
# install_embed (ctest, label install): installs this build into a temporary prefix with
# `cmake --install`, copies examples/embed out of the source tree, configures and builds it
# against the installed package (find_package(playbook)) and runs it: the loss must fall.
# Fails if the installed CMake files or the example's build refer to the source or build tree.
# Usage: check_embed.sh --build-dir DIR --source DIR [--cxx COMPILER] [--launcher LAUNCHER]
set -euo pipefail

build="" source="" cxx="" launcher=""
while (($#)); do
  case "$1" in
    --build-dir) build=$2; shift 2 ;;
    --source) source=$2; shift 2 ;;
    --cxx) cxx=$2; shift 2 ;;
    --launcher) launcher=$2; shift 2 ;;
    *) echo "check_embed: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[[ -n $build && -n $source ]] || { echo "usage: check_embed.sh --build-dir DIR --source DIR" >&2; exit 2; }

say() { echo "install_embed: $*"; }
fail() { echo "install_embed: FAILED: $*" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/playbook-embed.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

say "cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log" >&2; fail "cmake --install"; }
for f in bin/playbook include/playbook/runtime/core/tensor.h include/playbook/models/zoo.h \
  share/playbook/configs/mlp_fashion_mnist.toml share/playbook/examples/embed/CMakeLists.txt; do
  [[ -e $prefix/$f ]] || fail "$f is not installed"
done
cmake_dir=$(dirname "$(find "$prefix" -name playbookConfig.cmake | head -1)")
[[ -f $cmake_dir/playbookTargets.cmake ]] || fail "no playbookConfig.cmake/playbookTargets.cmake"
if grep -rlF "$source" "$cmake_dir"; then
  fail "the installed CMake package refers to the source or build tree ($source)"
fi
say "installed: $(find "$prefix" -type f | wc -l) files, $(du -sh "$prefix" | cut -f1)"

# The example, out of the tree, as a user copies it.
cp -r "$source/examples/embed" "$work/embed"
rm -rf "$work/embed/build"
args=(-DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON)
command -v ninja >/dev/null && args+=(-G Ninja)
[[ -n $cxx ]] && args+=(-DCMAKE_CXX_COMPILER="$cxx")
[[ -n $launcher ]] && args+=(-DCMAKE_CXX_COMPILER_LAUNCHER="$launcher")
say "configure and build examples/embed against $cmake_dir"
cmake -S "$work/embed" -B "$work/embed/build" "${args[@]}" >"$work/configure.log" 2>&1 ||
  { cat "$work/configure.log" >&2; fail "configuring examples/embed"; }
grep -qxF "playbook_DIR:PATH=$cmake_dir" "$work/embed/build/CMakeCache.txt" ||
  fail "examples/embed found another playbook: $(grep playbook_DIR "$work/embed/build/CMakeCache.txt")"
cmake --build "$work/embed/build" >"$work/build.log" 2>&1 ||
  { cat "$work/build.log" >&2; fail "building examples/embed"; }
if grep -F "$source" "$work/embed/build/compile_commands.json" "$work/embed/build/build.ninja" 2>/dev/null; then
  fail "examples/embed was compiled or linked with files of the source tree ($source)"
fi

say "run"
rc=0
"$work/embed/build/embed" >"$work/run.log" 2>&1 || rc=$?
cat "$work/run.log"
((rc == 0)) || fail "examples/embed exited with $rc"
read -r first last < <(sed -n 's/^embed: loss \([0-9.]*\) -> \([0-9.]*\).*/\1 \2/p' "$work/run.log")
[[ -n ${first:-} && -n ${last:-} ]] || fail "no 'embed: loss A -> B' line"
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < 0.5 * a) }' || fail "the loss did not fall: $first -> $last"
say "OK: loss $first -> $last"
