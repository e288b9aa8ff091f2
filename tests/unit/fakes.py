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

"""A host in memory: stand-in Linux and OVS dataplanes for the core's tests.

The real plug engine (observe, plan, apply, verify) runs over them, so
the reconciler and the RPC endpoint can be tested without root or
services. Writes follow the kernel's and OVS's semantics as the planner
relies on them (see tests/unit/reconcile/simulate.py). A test can hold
the next OVS transaction (``hold``) to keep a plug in progress, or make
it fail (``fail``).
"""

import dataclasses
import threading

from tests.unit.reconcile import simulate
from vifagent import binding as binding_mod
from vifagent.dataplane import firewall as fw_mod
from vifagent import exception
from vifagent.reconcile import apply
from vifagent.reconcile import plan as plan_mod
from vifagent import secgroup
from vifagent import state

OWNER = 'test-host'
BRIDGE = 'br-test'


class FakeHost:
    """Links and OVS ports of one imaginary host."""

    def __init__(self):
        self.links = {}
        self.ovs_ports = {}
        self.lock = threading.Lock()

    def observed(self):
        return state.Observed(links=dict(self.links),
                              ovs_ports=dict(self.ovs_ports))

    def commit(self, plan):
        with self.lock:
            result = simulate.apply(plan, self.observed(), BRIDGE)
            self.links, self.ovs_ports = result.links, result.ovs_ports


class FakeLinux:
    """LinuxDataplane's interface over a FakeHost."""

    def __init__(self, host):
        self.host = host
        #: Ops to drop silently: a write reported done that did not stick.
        self.drop = set()
        #: Set: the privileged daemon is lost (every write raises).
        self.fail = None

    def observe(self, names=None):
        links = self.host.links
        if names is None:
            return dict(links)
        return {name: links[name] for name in names if name in links}

    def apply(self, groups, deletes):
        if self.fail:
            raise exception.PrivilegedError(reason=self.fail)
        groups = {key: [op for op in ops if op.op not in self.drop]
                  for key, ops in groups.items()}
        self.host.commit(plan_mod.Plan(link_ops=groups,
                                       deletes=list(deletes)))
        return {'ports': {}, 'deletes': {}}

    def netns_up(self, requests):
        """eth0 up in each namespace: the tap's peer is up, so carrier."""
        with self.host.lock:
            for key in requests:
                tap = binding_mod.device_names(key).tap
                if tap in self.host.links:
                    self.host.links[tap] = dataclasses.replace(
                        self.host.links[tap], carrier=True)
        return {}

    def close(self):
        pass


class FakeOvs:
    """OvsDataplane's interface over a FakeHost."""

    bridge = BRIDGE

    def __init__(self, host):
        self.host = host
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.fail = None
        self.bridge_created = 0
        self.listeners = []
        self.external_ids = {}

    def observe(self, names=None):
        ports = self.host.ovs_ports
        if names is None:
            return dict(ports)
        return {name: ports[name] for name in names if name in ports}

    def apply(self, adds, updates, deletes):
        self.entered.set()
        self.hold.wait(30)
        if self.fail:
            raise exception.OvsdbError(reason=self.fail)
        self.host.commit(plan_mod.Plan(ovs_adds=list(adds),
                                       ovs_updates=list(updates),
                                       ovs_deletes=list(deletes)))
        return 1

    def bridge_external_ids(self):
        return dict(self.external_ids)

    def set_bridge_external_ids(self, values):
        if self.fail:
            raise exception.OvsdbError(reason=self.fail)
        self.external_ids.update(values)

    def tags_in_use(self):
        return {p.tag for p in self.host.ovs_ports.values()
                if p.tag is not None}

    def ensure_bridge(self):
        return False

    def connected(self):
        return True

    def add_listener(self, listener):
        self.listeners.append(listener)

    def remove_listener(self, listener):
        self.listeners.remove(listener)

    def stop(self):
        pass


class FakeFirewall:
    """Firewall's interface over a Ruleset kept in memory.

    Batches are applied with iptables-restore's and ipset's semantics as
    the planner relies on them; ``fail`` makes the next applies fail.
    """

    def __init__(self):
        self.rules = fw_mod.Ruleset()
        self.fail = None
        self.applied = []
        self.member_updates = []
        #: the parts each observation read (None: all)
        self.looks = []

    def observe(self, parts=None, last=None):
        self.looks.append(None if parts is None else set(parts))
        fresh = fw_mod.Ruleset(chains=dict(self.rules.chains),
                               jumps=set(self.rules.jumps),
                               sets=dict(self.rules.sets),
                               sysctls={n: '1' for n in fw_mod.SYSCTLS},
                               arp=dict(self.rules.arp),
                               arp_map=dict(self.rules.arp_map),
                               arp_base=self.rules.arp_base)
        if parts is None:
            return fresh
        return fw_mod.merge(fresh, last, parts)

    def update_members(self, groups):
        """Like the daemon: existing sets only; (written, error)."""
        written = 0
        for group in groups:
            for family in fw_mod.FAMILIES:
                name = secgroup.set_name(group.id, family)
                want = frozenset(group.members[family == 6])
                if name in self.rules.sets and \
                        self.rules.sets[name][1] != want:
                    self.rules.sets[name] = (family, want)
                    written += 1
        self.member_updates.append(written)
        return written, self.fail

    def apply(self, batch):
        self.applied.append(batch)
        if self.fail:
            return self.fail
        rules = self.rules
        for name, family in batch.set_creates:
            rules.sets[name] = (family, frozenset())
        for name, ip in batch.set_adds:
            family, members = rules.sets[name]
            rules.sets[name] = (family, members | {ip})
        for name, ip in batch.set_dels:
            family, members = rules.sets[name]
            rules.sets[name] = (family, members - {ip})
        for (family, table), ops in batch.tables.items():
            if ops.create_hook:
                hook = (family, table, secgroup.HOOK_CHAINS[table][1])
                rules.chains.setdefault(hook, ())
            for chain in ops.declare:
                rules.chains[(family, table, chain)] = ()
            for chain, rule in ops.delete_rules:
                key = (family, table, chain)
                rules.chains[key] = tuple(r for r in rules.chains[key]
                                          if r != rule)
            for chain, rule in ops.append:
                key = (family, table, chain)
                rules.chains[key] = rules.chains.get(key, ()) + (rule,)
            if ops.hook == 'insert':
                rules.jumps.add((family, table))
            elif ops.hook == 'delete':
                rules.jumps.discard((family, table))
            for chain in ops.destroy:
                del rules.chains[(family, table, chain)]
        for name in batch.set_destroys:
            del rules.sets[name]
        for op in batch.arp:
            if op[0] == 'base':
                rules.arp_base = True
            elif op[0] == 'chain':
                rules.arp[op[1]] = tuple(op[2])
            elif op[0] == 'element':
                rules.arp_map[op[1]] = op[2]
            elif op[0] == 'delete_element':
                del rules.arp_map[op[1]]
            elif op[0] == 'delete_chain':
                del rules.arp[op[1]]
        return None


def engine(host=None, firewall=None):
    """The real plug engine over a FakeHost (made if not given)."""
    host = host or FakeHost()
    return apply.Engine(FakeLinux(host), FakeOvs(host), OWNER, firewall)
