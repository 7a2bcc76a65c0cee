#!/usr/bin/env bash
# Fails when a tracked file cites a Markdown document that is not in the repository.
#
# A citation is any path ending in `.md` in a tracked text file: `docs/learning.md` in a comment,
# `[the C API](docs/c-api.md#threads)` in Markdown, `../README.md`. It resolves from the repository
# root or from the citing file's folder, and must name a tracked file. Addresses with a scheme
# (https://...) are not citations of this repository. Every tracked file is checked; each missing
# document is reported as `file:line: cites path, which does not exist`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

declare -A tracked=()
while IFS= read -r -d '' f; do
  tracked[$f]=1
done < <(git ls-files -z)

# A path: letters, digits, `_`, `-`, `.` and `/`, ending in `.md`, not preceded by a path character
# or by `:` (so that the tail of an address like https://host/x.md is not taken for a path).
pattern='(?<![A-Za-z0-9_./:~-])[A-Za-z0-9_./-]*[A-Za-z0-9_-]\.md(?![A-Za-z0-9_])'

missing=0
while IFS= read -r -d '' file; do
  while IFS=: read -r line cited; do
    found=
    for base in "$root" "$root/$(dirname "$file")"; do
      rel=$(realpath -m --relative-to="$root" "$base/$cited")
      if [ -n "${tracked[$rel]:-}" ]; then
        found=1
        break
      fi
    done
    if [ -z "$found" ]; then
      echo "$file:$line: cites $cited, which does not exist"
      missing=$((missing + 1))
    fi
  done < <(grep -IonP "$pattern" -- "$file" || true)
done < <(git ls-files -z)

if [ "$missing" -gt 0 ]; then
  echo "$missing citation(s) of documents that do not exist"
  exit 1
fi
