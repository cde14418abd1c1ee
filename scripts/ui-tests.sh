#!/usr/bin/env bash
# The conflict page in Chromium, what CI runs: Playwright (playwright-core) and axe-core from
# npm (the exact versions in tests/ui/package-lock.json, into tests/ui/node_modules), Debian's
# chromium (`apt-get install chromium`; Playwright cannot download browsers here), then the
# ignored test crates/cli/tests/ui_browser.rs, which starts the simulator, a hub with its
# bridge and two devices, and runs tests/ui/browser.mjs against Rita's page. The screenshots
# land in docs/ui/. Fails, never skips, when Node or chromium is still missing.
#
#   scripts/ui-tests.sh
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "error: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || fail "$1 not found: $2"; }
need cargo "install Rust (rustup)"
need node "install Node.js 18 or later"
need npm "install npm (it comes with Node.js)"

here=tests/ui
if [ ! -d "$here/node_modules/playwright-core" ] || [ ! -d "$here/node_modules/axe-core" ]; then
  echo "== npm ci (tests/ui/package-lock.json)"
  (cd "$here" && npm ci --no-audit --no-fund --ignore-scripts)
fi
chromium=/usr/bin/chromium
if [ ! -x "$chromium" ]; then
  need apt-get "install Debian's chromium by hand"
  echo "== apt-get install chromium"
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q chromium
fi
[ -x "$chromium" ] || fail "chromium not found at $chromium after apt-get install chromium"
"$chromium" --version 2>/dev/null || true

echo "== the conflict page in Chromium (crates/cli/tests/ui_browser.rs, tests/ui/browser.mjs)"
cargo test -p sellsync --test ui_browser -- --ignored --nocapture
