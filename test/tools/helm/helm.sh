#!/usr/bin/env bash
# helm.sh runs the helm this module pins (test/tools/tool.sh builds it once
# into the cache). Arguments go to helm.
exec "$(dirname "${BASH_SOURCE[0]}")/../tool.sh" helm "$@"
