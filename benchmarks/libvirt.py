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

"""libvirt benchmark: how fast a VM's life reaches its port.

One port per domain (TCG, no disk or OS, one ``type='ethernet'``
interface: enough for a tap), the agent's periodic pass an hour away.
Per round and domain: ``start``, from ``virDomainCreate`` returning until
``get_port`` (polled every 5 ms) says ACTIVE (the life-cycle event, the
cache refresh, the wiring of the new vnetN); ``bind``, ``unbind_port``
then ``bind_port`` of the running VM, timed to its ACTIVE reply;
``destroy``, from ``virDomainDestroy`` returning until DOWN. Per row: the
median of the round medians [min, max], then the p90 of all samples;
last ``<step>_median_ms``. The domains are undefined at the end::

    python -m benchmarks.libvirt --vms 20 --repeat 3
"""

import statistics
import sys
import time

from benchmarks import harness
from benchmarks.harness import BenchmarkError
from benchmarks.harness import log

POLL = 0.005
_ROWS = (('VM start to ACTIVE', 'start'),
         ('bind_port of a running VM (reply)', 'bind'),
         ('VM destroy to DOWN', 'destroy'))
_DOMAIN = ("<domain type='qemu'><name>%s</name><uuid>%s</uuid>"
           "<memory unit='MiB'>32</memory><vcpu>1</vcpu>"
           "<os><type arch='x86_64'>hvm</type></os>"
           "<devices><interface type='ethernet'><mac address='%s'/>"
           "<model type='virtio'/><rom enabled='no'/></interface>"
           "<controller type='usb' model='none'/>"
           "<memballoon model='none'/></devices></domain>")


class Benchmark(harness.AgentBench):

    agent_options = {'resync_interval': 3600}

    def __init__(self, args):
        super().__init__(args)
        self.expected = harness.ACTIVE
        self.conn = self.libvirt = None
        self.domains = []
        self.rounds = []

    def setup(self):
        import libvirt
        self.libvirt = libvirt
        libvirt.registerErrorHandler(lambda ctx, err: None, None)
        self.conn = libvirt.open('qemu:///system')
        super().setup()
        for n, port in enumerate(self.new_ports(self.args.vms)):
            self.domains.append((port, self.conn.defineXML(_DOMAIN % (
                'vifagent-bench-%s-%d' % (self.suffix, n),
                port.instance_uuid, port.mac))))
        log('%d domains defined', len(self.domains))
        for port, _ in self.domains:
            reply = self.client.bind_port(self.binding(port))
            if reply['status'] != harness.DOWN:
                raise BenchmarkError('%s is %s before its VM started' % (
                    port.port_id, reply['status']))

    def wait_status(self, port, status, what):
        deadline = time.monotonic() + self.args.timeout
        while True:
            reply = self.client.get_port(port.port_id)
            if reply['status'] == status:
                return reply
            if time.monotonic() > deadline:
                raise BenchmarkError('%s: %s is %s (%s), not %s' % (
                    what, port.port_id, reply['status'], reply['reason'],
                    status))
            time.sleep(POLL)

    def run(self):
        for number in range(1, self.args.repeat + 1):
            times = {key: [] for _, key in _ROWS}
            for port, dom in self.domains:
                dom.create()
                reply, seconds = harness.timed(
                    self.wait_status, port, harness.ACTIVE, 'start')
                times['start'].append(seconds)
                if not reply['devices']['tap']:
                    raise BenchmarkError('ACTIVE without a tap: %r' % reply)
                self.client.unbind_port(port.port_id)
                reply, seconds = harness.timed(self.client.bind_port,
                                               self.binding(port))
                times['bind'].append(seconds)
                self.expect_reply(reply, port, 'bind of a running VM')
            for port, dom in self.domains:
                dom.destroy()
                times['destroy'].append(harness.timed(
                    self.wait_status, port, harness.DOWN, 'destroy')[1])
            log('round %d: start %.1f ms, bind %.1f ms, destroy %.1f ms '
                '(medians)', number,
                *(1000 * statistics.median(times[key]) for _, key in _ROWS))
            self.rounds.append(times)

    def cleanup(self):
        clean = True
        for _, dom in self.domains:
            for step in (dom.destroy, dom.undefine):
                try:
                    step()
                except self.libvirt.libvirtError as e:
                    if e.get_error_code() not in (
                            self.libvirt.VIR_ERR_OPERATION_INVALID,
                            self.libvirt.VIR_ERR_NO_DOMAIN):
                        log('cleanup: %s: %s', dom.name(), e)
                        clean = False
        if self.conn is not None:
            self.conn.close()
        return super().cleanup() and clean

    def report(self):
        print('\n%d VMs, %d rounds; per row: median of the round medians '
              '[min, max], then p90 of all samples' % (len(self.domains),
                                                       len(self.rounds)))
        out = []
        for label, key in _ROWS:
            medians = [1000 * statistics.median(r[key]) for r in self.rounds]
            samples = [1000 * s for r in self.rounds for s in r[key]]
            print('  %-36s %8.1f ms [%.1f, %.1f]  p90 %.1f ms' % (
                (label,) + harness.spread(medians) +
                (harness.percentile(samples, 90),)))
            out.append('%s_median_ms=%.1f' % (key,
                                              statistics.median(medians)))
        print('\n'.join(out))
        sys.stdout.flush()


def parse_args(argv):
    return harness.AgentBench.parser(sys.modules[__name__], (
        ('--vms', 20, 'domains, one port each'),
        ('--repeat', 3, 'rounds of start, bind, destroy'))).parse_args(argv)


def main(argv=None):
    return harness.main(Benchmark(parse_args(argv)))


if __name__ == '__main__':
    sys.exit(main())
