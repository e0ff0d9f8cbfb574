#!/usr/bin/env bash
# version.sh prints the version this checkout builds as, from git tags: the
# string every binary reports, the images are tagged with and the chart's
# appVersion (the chart's version is the same without the leading v).
#
#   on a tag v0.3.0            v0.3.0
#   5 commits after it         v0.3.0-5-g15e3111abcde     (git describe)
#   no v* tag reachable        v0.0.0-dev.g15e3111abcde
#   no git (a source tarball)  v0.0.0-dev
#
# -dirty is appended where tracked files have uncommitted changes. Each is
# valid semver (what helm requires of a chart version) and a valid image tag
# (which allows no +, so git's -dirty is kept rather than build metadata).
# The sha is prefixed with g, as git describe does, so that an all-digit
# abbreviation never becomes a numeric semver identifier with a leading zero.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! git rev-parse --git-dir >/dev/null 2>&1; then
  echo v0.0.0-dev
elif v=$(git describe --tags --match 'v[0-9]*' --abbrev=12 --dirty 2>/dev/null); then
  echo "$v"
else
  echo "v0.0.0-dev.g$(git describe --always --abbrev=12 --dirty)"
fi
