#!/usr/bin/env bash
# Installs the Debian 12 system packages that `make demo` or `make test` needs, and only those that
# are missing. Usage: scripts/install-system.sh demo|test
#
#   demo: building and running the CLI: a C toolchain (gcc, libc headers), make, Python's venv, and
#         fontconfig with pkg-config (the demo's reward plot draws its text with system fonts, and the
#         plotting crates find fontconfig and FreeType through pkg-config when they build).
#   test: the above plus g++ (the C tests, and the source build of llama-cpp-python, whose cmake pip
#         fetches) and valgrind for the C tests, a JDK (default-jdk-headless: javac, jar)
#         and JUnit 5's console launcher (junit5) for the Java binding's tests, and Vulkan: the
#         loader (libvulkan1) and Mesa's software driver (lavapipe, mesa-vulkan-drivers) from
#         bookworm-backports, because the WebGPU execution provider refuses Debian 12's own Mesa 22.3.
#
# When nothing is missing it prints nothing and never runs apt. Otherwise it installs with apt-get
# as root, or through `sudo` when that works without a password; failing both it prints the exact
# commands to run as root and exits with status 1. Rust (cargo) is not a system package here: its
# absence stops the script with a pointer to rustup.
#
# PY names the Python that will make the venv (the Makefile passes its own; default python3).
# ATTUNE_SYSROOT, empty by default, is prefixed to the files the script reads and writes (apt
# sources, Vulkan driver manifests, JUnit's jar) so that scripts/test-install-system.sh can run it against a fake
# system.
set -uo pipefail

variant=${1:-}
if [ "$variant" != demo ] && [ "$variant" != test ]; then
  echo "usage: $0 demo|test" >&2
  exit 2
fi
py=${PY:-python3}
sysroot=${ATTUNE_SYSROOT:-}
sources_dir=$sysroot/etc/apt/sources.list.d
icd_dir=$sysroot/usr/share/vulkan/icd.d
junit_jar=$sysroot/usr/share/java/junit-platform-console-standalone.jar
# An installed Mesa older than this is replaced from bookworm-backports: the WebGPU execution provider
# refuses Debian 12's own 22.3, and backports' 25.0 is the version known to work.
mesa_min=25

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust 1.92 or newer with rustup (https://rustup.rs), then run make again" >&2
  exit 1
fi

# Packages from Debian 12's own suites, packages from bookworm-backports, and why each is needed.
main_pkgs=()
backports_pkgs=()
reasons=()

# The installed version of a Debian package, or nothing when it is not installed or dpkg is absent.
installed_version() {
  local status
  status=$(dpkg-query -W -f='${db:Status-Abbrev}|${Version}' "$1" 2>/dev/null) || return 0
  case $status in
    ii*) printf '%s' "${status#*|}" ;;
  esac
}

# Fills main_pkgs, backports_pkgs and reasons with what this machine lacks for $variant.
find_missing() {
  main_pkgs=()
  backports_pkgs=()
  reasons=()
  if ! command -v cc >/dev/null 2>&1; then
    main_pkgs+=(gcc); reasons+=("gcc: no C compiler (cc), which links the Rust build")
  elif ! printf '#include <stdio.h>\nint main(void) { return 0; }\n' | cc -x c - -o /dev/null >/dev/null 2>&1; then
    main_pkgs+=(libc6-dev); reasons+=("libc6-dev: cc cannot build a C program (no C library headers)")
  fi
  if ! command -v make >/dev/null 2>&1; then
    main_pkgs+=(make); reasons+=("make: no make")
  fi
  if ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    main_pkgs+=(python3-venv); reasons+=("python3-venv: '$py -c \"import venv, ensurepip\"' fails")
  fi
  if ! command -v pkg-config >/dev/null 2>&1; then
    main_pkgs+=(pkg-config); reasons+=("pkg-config: no pkg-config, which the plotting crates' builds use")
  fi
  local fontconfig=
  if command -v pkg-config >/dev/null 2>&1; then
    pkg-config --exists fontconfig && fontconfig=yes
  else
    fontconfig=$(installed_version libfontconfig-dev)
  fi
  if [ -z "$fontconfig" ]; then
    main_pkgs+=(libfontconfig-dev); reasons+=("libfontconfig-dev: no fontconfig development files (the demo plot's fonts)")
  fi
  [ "$variant" = test ] || return 0
  if ! command -v g++ >/dev/null 2>&1; then
    main_pkgs+=(g++); reasons+=("g++: no C++ compiler (the header is also checked as C++, and llama-cpp-python builds with it)")
  fi
  if ! command -v valgrind >/dev/null 2>&1; then
    main_pkgs+=(valgrind); reasons+=("valgrind: no valgrind (one C test runs under it)")
  fi
  if ! command -v javac >/dev/null 2>&1 || ! command -v jar >/dev/null 2>&1; then
    main_pkgs+=(default-jdk-headless); reasons+=("default-jdk-headless: no JDK (javac, jar) for the Java binding")
  fi
  if [ ! -f "$junit_jar" ]; then
    main_pkgs+=(junit5); reasons+=("junit5: no JUnit 5 console launcher ($junit_jar) for the Java binding's tests")
  fi
  # ldconfig lives in /sbin, which a non-root user's PATH on Debian does not include.
  local ldconfig
  ldconfig=$(command -v ldconfig || echo /sbin/ldconfig)
  if ! "$ldconfig" -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
    backports_pkgs+=(libvulkan1); reasons+=("libvulkan1: no Vulkan loader (libvulkan.so.1)")
  fi
  local mesa
  mesa=$(installed_version mesa-vulkan-drivers)
  if [ -n "$mesa" ] && dpkg --compare-versions "$mesa" lt "$mesa_min" 2>/dev/null; then
    backports_pkgs+=(mesa-vulkan-drivers); reasons+=("mesa-vulkan-drivers: Mesa $mesa is refused by the WebGPU execution provider; bookworm-backports has $mesa_min")
  elif [ -z "$mesa" ] && ! compgen -G "$icd_dir/*.json" >/dev/null; then
    backports_pkgs+=(mesa-vulkan-drivers); reasons+=("mesa-vulkan-drivers: no Vulkan driver in $icd_dir")
  fi
}

find_missing
if [ ${#main_pkgs[@]} -eq 0 ] && [ ${#backports_pkgs[@]} -eq 0 ]; then
  exit 0
fi

# The commands that install what is missing, each run as root by bash (and printed as is when this
# script cannot run them). The backports source is added as the Debian one is written: same mirror.
commands=()
if [ ${#backports_pkgs[@]} -gt 0 ] && [ ! -f "$sources_dir/backports.sources" ] &&
   ! grep -rqs 'bookworm-backports' "$sysroot/etc/apt/sources.list" "$sources_dir/"; then
  uris=$(awk '/^URIs:/{print $2; exit}' "$sources_dir/debian.sources" 2>/dev/null || true)
  uris=${uris:-http://deb.debian.org/debian}
  commands+=("printf 'Types: deb\\nURIs: %s\\nSuites: bookworm-backports\\nComponents: main\\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\\n' '$uris' > '$sources_dir/backports.sources'")
fi
commands+=("apt-get update -qq")
[ ${#main_pkgs[@]} -eq 0 ] || commands+=("apt-get install -y -qq ${main_pkgs[*]}")
[ ${#backports_pkgs[@]} -eq 0 ] || commands+=("apt-get install -y -qq -t bookworm-backports ${backports_pkgs[*]}")

echo "Missing system packages for 'make $variant':"
printf '  %s\n' "${reasons[@]}"

if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt-get not found: this script installs packages on Debian 12 only; install the equivalents" >&2
  echo "of the packages above with this system's package manager, then run make again." >&2
  exit 1
fi
if [ "$(id -u)" = 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
  as_root=(sudo -n)
else
  echo "Not root, and sudo is missing or asks for a password. Run these as root (su -, or sudo -i)," >&2
  echo "then run make again:" >&2
  printf '  %s\n' "${commands[@]}" >&2
  exit 1
fi

echo "Installing them${as_root:+ with sudo}:"
for c in "${commands[@]}"; do
  echo "  $c"
  # apt's progress goes to /dev/null; its errors still reach stderr.
  if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive bash -c "$c" >/dev/null; then
    echo "failed: $c" >&2
    exit 1
  fi
done

find_missing
if [ ${#main_pkgs[@]} -gt 0 ] || [ ${#backports_pkgs[@]} -gt 0 ]; then
  echo "Still missing after installing:" >&2
  printf '  %s\n' "${reasons[@]}" >&2
  exit 1
fi
