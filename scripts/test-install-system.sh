#!/usr/bin/env bash
# Tests scripts/install-system.sh against fake systems, without touching this machine's packages:
# every command it runs (id, sudo, apt-get, dpkg-query, ldconfig, cc, python, pkg-config, ...) is
# a stub in a private PATH, and its files (apt sources, Vulkan manifests) live under ATTUNE_SYSROOT.
# The apt-get stub "installs" a package by making the stubs and files that report it present, and
# logs every call, so each case checks both what the script printed and what it ran.
set -euo pipefail
cd "$(dirname "$0")/.."
script=$PWD/scripts/install-system.sh
bash_bin=$(type -P bash)
dpkg_bin=$(type -P dpkg || true)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

# Writes an executable stub `$1` into the fake PATH with the body on standard input.
stub() {
  { echo "#!$bash_bin"; cat; } >"$bin/$1"
  chmod +x "$bin/$1"
}

# Makes package $1 present on the fake system, as apt-get would.
present() {
  local p
  for p in "$@"; do
    case $p in
      gcc) stub cc <<<'cat >/dev/null; [ ! -e "$STATE/no-libc" ]' ;;
      libc6-dev) rm -f "$state/no-libc" ;;
      make) stub make <<<'exit 0' ;;
      python3-venv) touch "$state/venv" ;;
      pkg-config) stub pkg-config <<<'[ "$1 $2" = "--exists fontconfig" ] && [ -e "$STATE/fontconfig" ]' ;;
      libfontconfig-dev) touch "$state/fontconfig"; echo 2.14.1-4 >"$state/dpkg/libfontconfig-dev" ;;
      g++) stub g++ <<<'exit 0' ;;
      valgrind) stub valgrind <<<'exit 0' ;;
      default-jdk-headless) stub javac <<<'exit 0'; stub jar <<<'exit 0' ;;
      junit5) mkdir -p "$root/usr/share/java"; touch "$root/usr/share/java/junit-platform-console-standalone.jar" ;;
      libvulkan1) touch "$state/libvulkan" ;;
      mesa-vulkan-drivers)
        mkdir -p "$root/usr/share/vulkan/icd.d"
        touch "$root/usr/share/vulkan/icd.d/lvp_icd.json"
        echo "${MESA_VERSION:-25.0.7-2~bpo12+1}" >"$state/dpkg/mesa-vulkan-drivers" ;;
      *) echo "test bug: unknown package $p" >&2; exit 2 ;;
    esac
  done
}

# A fresh fake system: the basic tools, cargo, id, dpkg-query, ldconfig, python and apt-get.
fresh() {
  rm -rf "$work/case"
  bin=$work/case/bin state=$work/case/state root=$work/case/root
  mkdir -p "$bin" "$state/dpkg" "$root/etc/apt/sources.list.d"
  local t
  for t in env true grep awk cat rm touch mkdir chmod; do ln -s "$(type -P "$t")" "$bin/$t"; done
  [ -z "$dpkg_bin" ] || ln -s "$dpkg_bin" "$bin/dpkg"
  ln -s "$bash_bin" "$bin/bash"
  printf 'Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n' \
    >"$root/etc/apt/sources.list.d/debian.sources"
  stub cargo <<<'exit 0'
  stub id <<<'[ "$1" = -u ] && echo "$FAKE_UID"'
  stub python3 <<<'[ -e "$STATE/venv" ]'
  stub dpkg-query <<<'f="$STATE/dpkg/${!#}"; [ -e "$f" ] && printf "ii |%s" "$(cat "$f")"'
  stub ldconfig <<<'[ -e "$STATE/libvulkan" ] && echo "	libvulkan.so.1 (libc6,x86-64) => /usr/lib/libvulkan.so.1"; exit 0'
  # apt-get refuses to run unless root; `install` makes each named package present.
  { declare -f stub present; cat <<'EOF'
echo "apt-get $*" >>"$STATE/calls"
[ "$FAKE_UID" = 0 ] || { echo "apt-get: not root" >&2; exit 100; }
bin=$BIN state=$STATE root=$ROOT bash_bin=$BASH_BIN
if [ "$1" = install ]; then
  shift
  while [ $# -gt 0 ]; do
    case $1 in -t) shift ;; -*) ;; *) present "$1" ;; esac
    shift
  done
fi
EOF
  } | stub apt-get
  uid=1000
}

# Makes sudo work without a password (it runs the command as root), or ask for one (`sudo asks`).
sudo_works() {
  stub sudo <<<'echo "sudo $*" >>"$STATE/calls"; [ "$1" = -n ] && shift; FAKE_UID=0 exec "$@"'
}
sudo_asks() {
  stub sudo <<<'echo "sudo $*" >>"$STATE/calls"; echo "sudo: a password is required" >&2; exit 1'
}

# Runs the script for variant $1 on the fake system; sets $out and $rc.
run() {
  rc=0
  out=$(env -i PATH="$bin" HOME="$work" PY=python3 ATTUNE_SYSROOT="$root" STATE="$state" FAKE_UID="$uid" \
    BIN="$bin" ROOT="$root" BASH_BIN="$bash_bin" "$bash_bin" "$script" "$1" 2>&1) || rc=$?
}

calls() { cat "$state/calls" 2>/dev/null || true; }

check() {
  local name=$1; shift
  if "$@"; then
    echo "ok: $name"
  else
    echo "FAILED: $name"
    echo "  exit status $rc; output:"; sed 's/^/    /' <<<"$out"
    echo "  calls:"; calls | sed 's/^/    /'
    failures=$((failures + 1))
  fi
}

all_demo=(gcc make python3-venv pkg-config libfontconfig-dev)
all_test=("${all_demo[@]}" g++ valgrind default-jdk-headless junit5 libvulkan1 mesa-vulkan-drivers)

fresh; present "${all_test[@]}"; uid=0; run test
check "root, nothing missing: silent, no apt" eval '[ $rc = 0 ] && [ -z "$out" ] && [ -z "$(calls)" ]'

fresh; present "${all_demo[@]}"; run demo
check "demo needs no Vulkan, g++, valgrind, JDK or JUnit" eval '[ $rc = 0 ] && [ -z "$out" ] && [ -z "$(calls)" ]'

fresh; present make pkg-config libfontconfig-dev; run demo
check "user without sudo: prints the exact commands, runs nothing" eval '[ $rc = 1 ] &&
  grep -qx "  apt-get update -qq" <<<"$out" && grep -qx "  apt-get install -y -qq gcc python3-venv" <<<"$out" &&
  ! grep -q "backports\|valgrind\|mesa" <<<"$out" && [ -z "$(calls)" ]'

fresh; present make pkg-config libfontconfig-dev; sudo_asks; run demo
check "sudo that asks for a password counts as no sudo" eval '[ $rc = 1 ] &&
  grep -q "Run these as root" <<<"$out" && ! grep -q "^apt-get" <<<"$(calls)"'

fresh; present "${all_demo[@]}" g++ libvulkan1; sudo_works; run test
check "user with sudo, test: adds backports like .ci/run, installs, then all present" eval '[ $rc = 0 ] &&
  grep -qx "sudo -n true" <<<"$(calls)" &&
  grep -qx "apt-get update -qq" <<<"$(calls)" &&
  grep -qx "apt-get install -y -qq valgrind default-jdk-headless junit5" <<<"$(calls)" &&
  grep -qx "apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers" <<<"$(calls)" &&
  grep -qx "URIs: http://mirror.example/debian" "$root/etc/apt/sources.list.d/backports.sources" &&
  grep -qx "Suites: bookworm-backports" "$root/etc/apt/sources.list.d/backports.sources"'
run test
check "second run after installing: silent, no apt" eval '[ $rc = 0 ] && [ -z "$out" ] &&
  [ "$(grep -c "^apt-get" <<<"$(calls)")" = 3 ]'

fresh; present "${all_test[@]}"; echo "22.3.6-1+deb12u1" >"$state/dpkg/mesa-vulkan-drivers"; uid=0
printf 'deb http://mirror.example/debian bookworm-backports main\n' >"$root/etc/apt/sources.list"
run test
check "root, Debian 12's own Mesa: upgrades from backports, keeps the existing source" eval '[ $rc = 0 ] &&
  grep -q "Mesa 22.3.6-1+deb12u1 is refused" <<<"$out" &&
  grep -qx "apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers" <<<"$(calls)" &&
  [ ! -e "$root/etc/apt/sources.list.d/backports.sources" ]'

fresh; present "${all_demo[@]}"; uid=0; run test
check "root, test, no Vulkan at all: the loader and Mesa from backports" eval '[ $rc = 0 ] &&
  grep -qx "apt-get install -y -qq g++ valgrind default-jdk-headless junit5" <<<"$(calls)" &&
  grep -qx "apt-get install -y -qq -t bookworm-backports libvulkan1 mesa-vulkan-drivers" <<<"$(calls)"'

fresh; present "${all_demo[@]}" g++ valgrind libvulkan1 mesa-vulkan-drivers default-jdk-headless; uid=0; run test
check "root, test, JDK but no JUnit: only junit5, named with its jar" eval '[ $rc = 0 ] &&
  grep -q "junit5: no JUnit 5 console launcher" <<<"$out" &&
  grep -qx "apt-get install -y -qq junit5" <<<"$(calls)" && [ "$(grep -c "^apt-get install" <<<"$(calls)")" = 1 ]'

fresh; present "${all_demo[@]}" g++ valgrind libvulkan1 mesa-vulkan-drivers junit5; stub javac <<<'exit 0'; uid=0; run test
check "root, test, javac without jar: the JDK" eval '[ $rc = 0 ] &&
  grep -qx "apt-get install -y -qq default-jdk-headless" <<<"$(calls)"'

fresh; present "${all_demo[@]}"; touch "$state/no-libc"; uid=0; run demo
check "a cc that cannot build a C program gets libc6-dev" eval '[ $rc = 0 ] &&
  grep -qx "apt-get install -y -qq libc6-dev" <<<"$(calls)"'

fresh; present "${all_demo[@]}"; rm "$bin/python3"; stub python3 <<<'exit 1'; uid=0; run demo
check "a Python that apt cannot fix: reported after installing, exit 1" eval '[ $rc = 1 ] &&
  grep -q "Still missing after installing" <<<"$out" && grep -q "python3-venv" <<<"$out"'

fresh; present "${all_demo[@]}"; rm "$bin/apt-get" "$bin/make"; uid=0; run demo
check "no apt-get: names the packages, installs nothing" eval '[ $rc = 1 ] &&
  grep -q "make: no make" <<<"$out" && grep -q "apt-get not found" <<<"$out"'

fresh; rm "$bin/cargo"; uid=0; run demo
check "no cargo: points to rustup before anything else" eval '[ $rc = 1 ] && grep -q rustup <<<"$out" && [ -z "$(calls)" ]'

fresh; run other
check "an unknown variant is a usage error" eval '[ $rc = 2 ] && grep -q usage <<<"$out"'

if [ "$failures" -gt 0 ]; then
  echo "$failures case(s) of scripts/install-system.sh failed"
  exit 1
fi
