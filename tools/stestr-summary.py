#!/usr/bin/env python3
# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""Sum the stestr results of a tox run into one line.

Usage: stestr-summary.py LOG_FILE TOX_EXIT_CODE

LOG_FILE is the captured output of a tox run whose environments run
``stestr run``. Every stestr ``Totals`` block is read; a tox environment
that failed without a ``Totals`` block reporting failures (an import error
makes stestr exit 100 before running anything, a dependency may fail to
install) counts as one failure, and so does a non-zero TOX_EXIT_CODE that
nothing else explains. Per-environment lines come first; the last line
printed is always ``N passed, N failed``. The exit status is 0 only when
nothing failed.
"""

import collections
import re
import sys

# Colour and cursor escape sequences, in case the log came from a terminal.
_ANSI = re.compile(r'\x1b\[[0-9;?]*[A-Za-z]')
_RULE = re.compile(r'^=+$')
_RAN = re.compile(r'^Ran: \d+ tests? in ')
_COUNT = re.compile(r'^ - ([A-Za-z][A-Za-z ]*?): (\d+)\s*$')
# tox 4: "py3: commands[0]> stestr run", "py3: install_deps> ...".
# Output without a trailing newline can run into the marker, so it is
# searched for anywhere on the line once the environment names are known.
_STEP = r'({names}): (?:[a-z_]+(?:\[\d+\])?)> '
_STEP_AT_START = re.compile(_STEP.format(names=r'[A-Za-z0-9_.+-]+'))
# tox 4 report: "  py3: OK (4.1=setup[..]+cmd[..] seconds)",
# "  functional: FAIL code 100 (0.3 seconds)", "  pep8: SKIP (0.0 seconds)".
# When the package fails to build, "code" is followed by a message instead
# of a number.
_REPORT = re.compile(
    r'^\s+([A-Za-z0-9_.+-]+): (OK|SKIP|FAIL)\b(.*)\(\d[^()]* seconds\)\s*$')
_REPORT_CODE = re.compile(r'^\s*code (-?\d+)\b')

_PASSED_KEYS = ('Passed',)
_FAILED_KEYS = ('Failed', 'Unexpected Success')


class EnvResult(object):

    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.totals = 0       # Totals blocks found
        self.outcome = None   # 'OK', 'FAIL' or 'SKIP' from tox's report
        self.code = None      # tox's exit code for a failed environment


def _clean_lines(text):
    text = _ANSI.sub('', text)
    return [line.rstrip('\r') for line in text.split('\n')]


def _find_totals(lines):
    """Return [(line_index, {key: count})] for each stestr Totals block.

    A block is the exact sequence of subunit-trace: a rule, ``Totals``, a
    rule, ``Ran: N tests in ...`` and then `` - Key: N`` lines. Text a test
    printed is not taken for a block unless it imitates all of that.
    """
    blocks = []
    i = 0
    while i + 3 < len(lines):
        if (lines[i + 1].strip() == 'Totals'
                and _RULE.match(lines[i].strip())
                and _RULE.match(lines[i + 2].strip())
                and _RAN.match(lines[i + 3].strip())):
            counts = {}
            j = i + 4
            while j < len(lines):
                m = _COUNT.match(lines[j])
                if not m:
                    break
                counts[m.group(1)] = int(m.group(2))
                j += 1
            blocks.append((i, counts))
            i = j
        else:
            i += 1
    return blocks


def _env_reports(lines):
    reports = collections.OrderedDict()
    for line in lines:
        m = _REPORT.match(line)
        if m:
            name, outcome, rest = m.groups()
            code = _REPORT_CODE.match(rest) if outcome == 'FAIL' else None
            reports[name] = (outcome, int(code.group(1)) if code else None)
    return reports


def _segment(lines, names):
    """Map every line index to the tox environment it was printed under."""
    if names:
        alternatives = '|'.join(
            re.escape(n) for n in sorted(names, key=len, reverse=True))
        step = re.compile(_STEP.format(names=alternatives))
    else:
        step = None
    owner = []
    current = None
    for line in lines:
        if step is not None:
            found = step.findall(line)
            if found:
                current = found[-1]
        else:
            m = _STEP_AT_START.match(line)
            if m:
                current = m.group(1)
        owner.append(current)
    return owner


def summarize(text, tox_rc):
    """Return (env_results, notes, passed, failed) for a tox log."""
    lines = _clean_lines(text)
    reports = _env_reports(lines)
    owner = _segment(lines, list(reports))

    envs = collections.OrderedDict()

    def env(name):
        if name not in envs:
            envs[name] = EnvResult(name)
        return envs[name]

    # Environments in the order tox ran them.
    for name in owner:
        if name is not None:
            env(name)
    for name, (outcome, code) in reports.items():
        result = env(name)
        result.outcome = outcome
        result.code = code

    for index, counts in _find_totals(lines):
        result = env(owner[index] or '(unknown)')
        result.totals += 1
        result.passed += sum(counts.get(k, 0) for k in _PASSED_KEYS)
        result.failed += sum(counts.get(k, 0) for k in _FAILED_KEYS)
        result.skipped += counts.get('Skipped', 0)

    notes = []
    for result in envs.values():
        if result.outcome == 'FAIL' and result.failed == 0:
            # stestr exits 100 without a Totals block when a test module
            # does not import; installs can fail before any test runs.
            result.failed = 1
            if result.totals:
                why = 'its tests reported no failure'
            else:
                why = 'no test totals were printed'
            if result.code is None:
                how = 'tox reported a failure'
            else:
                how = 'tox reported exit code %d' % result.code
            notes.append('%s: %s and %s; counted as one failure'
                         % (result.name, how, why))

    passed = sum(r.passed for r in envs.values())
    failed = sum(r.failed for r in envs.values())
    if tox_rc != 0 and failed == 0:
        notes.append('tox exited with code %d but no failure was found in '
                     'its output; counted as one failure' % tox_rc)
        failed = 1
    return envs, notes, passed, failed


def main(argv):
    if len(argv) != 3:
        sys.stderr.write('usage: %s LOG_FILE TOX_EXIT_CODE\n' % argv[0])
        return 2
    try:
        tox_rc = int(argv[2])
    except ValueError:
        sys.stderr.write('TOX_EXIT_CODE must be an integer, not %r\n'
                         % argv[2])
        return 2
    try:
        with open(argv[1], encoding='utf-8', errors='replace') as f:
            text = f.read()
    except OSError as exc:
        print('cannot read %s: %s' % (argv[1], exc))
        print('0 passed, 1 failed')
        return 1

    envs, notes, passed, failed = summarize(text, tox_rc)
    for result in envs.values():
        if not result.totals and result.outcome is None:
            continue
        line = '%s: %d passed, %d failed' % (result.name, result.passed,
                                             result.failed)
        if result.skipped:
            line += ', %d skipped' % result.skipped
        if result.outcome:
            line += ' (tox: %s)' % (result.outcome if result.code is None
                                    else 'FAIL code %d' % result.code)
        print(line)
    for note in notes:
        print(note)
    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
