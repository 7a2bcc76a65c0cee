#!/usr/bin/env bash
# Builds the Java binding (libattune_jni, the dev.attune classes and attune.jar) and runs its JUnit 5
# tests on the tiny model. Run from anywhere; `make test-java` runs it. Needs a JDK (javac, jar)
# and JUnit 5's console launcher (Debian's junit5), which `scripts/install-system.sh test` installs.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=target/java
junit=${JUNIT_CONSOLE_JAR:-/usr/share/java/junit-platform-console-standalone.jar}
cargo=${CARGO:-cargo}
missing=()
command -v javac >/dev/null 2>&1 && command -v jar >/dev/null 2>&1 || missing+=("a JDK (javac, jar): default-jdk-headless")
[ -f "$junit" ] || missing+=("JUnit 5's console launcher ($junit): junit5")
if [ ${#missing[@]} -gt 0 ]; then
  printf 'missing for the Java binding tests: %s\n' "${missing[@]}" >&2
  echo "install them with: bash scripts/install-system.sh test   (or: apt-get install -y default-jdk-headless junit5)" >&2
  exit 1
fi

$cargo build --release -p attune-jni
rm -rf "$out"
mkdir -p "$out/classes" "$out/test-classes"
javac -Xlint:all -Werror --release 11 -d "$out/classes" $(find bindings/java/src/main -name '*.java')
jar --create --file "$out/attune.jar" -C "$out/classes" .
javac -Xlint:all -Werror -d "$out/test-classes" -cp "$out/attune.jar:$junit" $(find bindings/java/src/test -name '*.java')
mkdir -p "${XDG_RUNTIME_DIR:-/tmp/attune-xdg}"
set +e
java -Dattune.native.library="$PWD/target/release/libattune_jni.so" -jar "$junit" \
  --class-path "$out/attune.jar:$out/test-classes" --scan-class-path --disable-banner --fail-if-no-tests \
  --details=tree --disable-ansi-colors --reports-dir "$out/reports" | tee "$out/junit.txt"
rc=${PIPESTATUS[0]}
set -e
# The launcher's own summary is a table; this is the one closing line every runner understands.
passed=$(sed -n 's/^\[ *\([0-9]*\) tests successful *\]$/\1/p' "$out/junit.txt")
failed=$(sed -n 's/^\[ *\([0-9]*\) tests failed *\]$/\1/p' "$out/junit.txt")
echo "java: ${passed:-0} passed, ${failed:-0} failed"
exit "$rc"
