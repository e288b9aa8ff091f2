#!/bin/bash
# The one test command: set up this host and run the whole suite.
#
# Run from anywhere, as root, on a Debian 12 host (fresh or not): installs
# the system packages that are missing, starts Open vSwitch, RabbitMQ and
# libvirt (or finds them running), builds the tiny guest the traffic tests
# boot, then runs the style gate (tox -e pep8) and the unit and functional
# tests (tox -e py3,functional). The last line printed is
# "N passed, N failed"; the exit status is non-zero if anything failed.
# Continuous integration (.ci/run) runs exactly this.
set -o pipefail
set -u

cd "$(dirname "$0")/.." || { echo "0 passed, 1 failed"; exit 1; }
TOP=$(pwd)

LOG_DIR=${CI_LOG_DIR:-$TOP/.ci-logs}
BOOTSTRAP=$TOP/.tox-bootstrap
TEST_LOG=$LOG_DIR/tox-tests.log

export DEBIAN_FRONTEND=noninteractive
export PYTHONUNBUFFERED=1
export NO_COLOR=1

step() {
    echo
    echo "==== $* ===="
}

# Setup failed before any test could run: still end with the summary line.
setup_failed() {
    echo "CI setup failed: $*"
    echo "0 passed, 1 failed"
    exit 1
}

step "system packages"
tools/install-deps.sh || setup_failed "installing system packages"

step "Open vSwitch"
tools/start-ovs.sh || setup_failed "starting Open vSwitch"

step "RabbitMQ"
tools/start-rabbitmq.sh || setup_failed "starting RabbitMQ"

step "libvirt"
tools/start-libvirt.sh || setup_failed "starting libvirt"

step "test guest"
tools/build-guest.sh || setup_failed "building the test guest"

# pbr reads the version from git; without usable git metadata (an exported
# tree, a repository without commits) give it one so the package builds.
if ! git -C "$TOP" rev-parse --verify -q HEAD >/dev/null 2>&1; then
    export PBR_VERSION=${PBR_VERSION:-0.0.1.dev0}
    echo "No git history: building with PBR_VERSION=$PBR_VERSION"
fi

step "tox"
if [ ! -x "$BOOTSTRAP/bin/tox" ]; then
    rm -rf "$BOOTSTRAP"
    python3 -m venv "$BOOTSTRAP" || setup_failed "creating $BOOTSTRAP"
    "$BOOTSTRAP/bin/python" -m pip install -q 'tox>=4.6.0' ||
        setup_failed "installing tox"
fi
TOX=$BOOTSTRAP/bin/tox
"$TOX" --version || setup_failed "running tox"
mkdir -p "$LOG_DIR" || setup_failed "creating $LOG_DIR"

step "tox -e pep8"
"$TOX" -e pep8 2>&1 | tee "$LOG_DIR/tox-pep8.log"
pep8_rc=$?

step "tox -e py3,functional"
"$TOX" -e py3,functional 2>&1 | tee "$TEST_LOG"
tests_rc=$?

step "summary"
if [ "$pep8_rc" -ne 0 ]; then
    echo "pep8 failed with exit code $pep8_rc (see $LOG_DIR/tox-pep8.log)"
fi
echo "tox -e py3,functional exited with code $tests_rc"
python3 tools/stestr-summary.py "$TEST_LOG" "$tests_rc"
summary_rc=$?

if [ "$pep8_rc" -ne 0 ] || [ "$summary_rc" -ne 0 ]; then
    exit 1
fi
exit 0
