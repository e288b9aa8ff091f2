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

"""Imports run downward only, in the layer order README.rst draws."""

import ast
import os
import re

from oslotest import base

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
PACKAGE = os.path.join(TOP, 'vifagent')


def layers():
    """{name: rank} from README.rst's Layers picture, 0 at the top."""
    with open(os.path.join(TOP, 'README.rst')) as f:
        text = f.read()
    section = text.split('\nLayers\n------\n', 1)[1]
    block = section.split('::\n\n', 1)[1].split('\n\n', 1)[0]
    ranks = {}
    for rank, line in enumerate(block.splitlines()):
        names = re.split(r'\s{2,}', line.strip())[0]
        for name in names.split(','):
            ranks[name.strip()] = rank
    return ranks


def imports(source):
    """vifagent's own modules that some source code imports (top name)."""
    tree = ast.parse(source)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and \
                node.level == 0:
            names = [node.module + '.' + alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split('.')
            if parts[0] == 'vifagent' and len(parts) > 1:
                found.add(parts[1])
    return found


def modules():
    """(layer name, path) of every module under vifagent/."""
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith('.py'):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, PACKAGE).split(os.sep)
            if rel == ['__init__.py']:
                continue
            yield rel[0][:-3] if len(rel) == 1 else rel[0], path


class TestLayers(base.BaseTestCase):

    def test_picture_names_every_module(self):
        ranks = layers()
        missing = {layer for layer, _ in modules()} - set(ranks)
        self.assertEqual(set(), missing)

    def test_imports_run_downward(self):
        ranks = layers()
        upward = []
        for layer, path in modules():
            with open(path) as f:
                source = f.read()
            for imported in imports(source):
                if imported in ranks and ranks[imported] < ranks[layer]:
                    upward.append('%s imports %s' % (
                        os.path.relpath(path, TOP), imported))
        self.assertEqual([], sorted(upward))

    def test_the_check_sees_an_upward_import(self):
        # A module of the lowest layer importing the top one is caught.
        ranks = layers()
        self.assertLess(ranks['cmd'], ranks['kernel'])
        self.assertEqual({'cmd', 'state', 'reconcile'}, imports(
            'from vifagent import cmd\nimport vifagent.state\n'
            'def f():\n    from vifagent.reconcile import plan\n'))
