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

"""vifagent-ctl: drive an agent over the message bus.

Output is a table for people or JSON (``--format json``) for scripts.
Errors print their type and reason and exit non-zero: 2 for a request the
agent refused (bad binding, unknown port, stale revision), 1 otherwise.
"""

import argparse
import json
import sys
import threading
import time
import uuid

from oslo_config import cfg
import oslo_messaging as messaging

from vifagent import conf as vifagent_conf  # noqa: F401 (registers opts)
from vifagent import exception
from vifagent import rpc
from vifagent.rpc import client as client_mod
from vifagent.rpc import registry as registry_mod

CONF = cfg.CONF

_PORT_COLUMNS = ('port_id', 'status', 'vlan', 'revision', 'tap', 'qbr',
                 'qvo', 'groups', 'reason')
_GROUP_COLUMNS = ('id', 'revision', 'stateful', 'rules', 'members')


def _parser():
    p = argparse.ArgumentParser(prog='vifagent-ctl', description=__doc__)
    p.add_argument('--config-file', action='append', default=[],
                   help='vifagent configuration (transport_url, topics); '
                        'default /etc/vifagent/vifagent.conf if present')
    p.add_argument('--host', help='the agent to address (default: [DEFAULT] '
                                  'host of the configuration)')
    p.add_argument('--transport-url', help='overrides the configuration')
    p.add_argument('--timeout', type=int, default=60,
                   help='seconds to wait for a reply')
    p.add_argument('--format', choices=('table', 'json'), default='table')
    sub = p.add_subparsers(dest='command', required=True)

    bind = sub.add_parser('bind', help='bind a port')
    bind.add_argument('--json', dest='binding_json',
                      help='the whole binding as a JSON object')
    bind.add_argument('--port-id')
    bind.add_argument('--mac-address')
    bind.add_argument('--instance-uuid')
    bind.add_argument('--network-id')
    bind.add_argument('--mtu', type=int)
    bind.add_argument('--revision', type=int)
    bind.add_argument('--admin-down', action='store_true')
    bind.add_argument('--netns', help='bind as vif_type netns into this '
                                      'network namespace')
    bind.add_argument('--port-security', action='store_true',
                      help='filter the port (port_security_enabled)')
    bind.add_argument('--fixed-ip', action='append', dest='fixed_ips',
                      help='an address of the port (repeatable)')
    bind.add_argument('--security-group', action='append',
                      dest='security_groups',
                      help='a security group id (repeatable)')
    for name in ('unbind', 'show'):
        cmd = sub.add_parser(name, help='%s a port' % name)
        cmd.add_argument('port_id')
    sub.add_parser('list', help='list the bound ports')
    sync = sub.add_parser('sync', help='make a JSON file of bindings the '
                                       'complete set of the host')
    sync.add_argument('file', help='a JSON list of bindings (- for stdin)')
    sub.add_parser('status', help='show the agent state')
    sub.add_parser('groups', help='list the security groups the agent '
                                  'holds')
    group = sub.add_parser('group', help='show one security group')
    group.add_argument('security_group_id')
    sync_groups = sub.add_parser(
        'sync-groups', help='make a JSON file of security groups the '
                            'complete set the agent holds')
    sync_groups.add_argument('file', help='a JSON list of groups (- for '
                                          'stdin)')
    update = sub.add_parser('group-update', help='cast one changed group '
                                                 'to every agent')
    update.add_argument('file', help='a JSON group (- for stdin)')
    watch = sub.add_parser('watch', help='print status changes and '
                                         'heartbeats as they arrive')
    watch.add_argument('--count', type=int,
                       help='stop after this many messages')
    watch.add_argument('--duration', type=float,
                       help='stop after this many seconds')
    agents = sub.add_parser(
        'agents', help='list the agents heard on the report topic: alive '
                       'or dead, ports by status, who needs a full sync')
    agents.add_argument('--listen', type=float,
                        help='seconds to listen before printing (default: '
                             'report_interval + 1, one heartbeat of each '
                             'live agent)')
    agents.add_argument('--watch', action='store_true',
                        help='keep listening; print each agent that appears, '
                             'dies, comes back or asks for a full sync')
    agents.add_argument('--duration', type=float,
                        help='with --watch: stop after this many seconds')
    agents.add_argument('--json', action='store_true',
                        help='JSON (same as --format json)')
    return p


_AGENT_COLUMNS = ('host', 'alive', 'silent_for', 'ports', 'by_status',
                  'version', 'restarts', 'needs_sync')


def _agent_row(agent):
    by_status = ','.join('%s=%s' % kv for kv in
                         sorted(agent['ports_by_status'].items()))
    row = dict(agent, by_status=by_status,
               alive='alive' if agent['alive'] else 'DEAD',
               needs_sync=(agent['sync_reason'] if agent['needs_sync']
                           else ''))
    return [row.get(c) for c in _AGENT_COLUMNS]


def _agent_event(agent, before):
    """What changed for ``agent`` since ``before`` (None: first seen)."""
    if before is None:
        return 'alive' if agent['alive'] else 'dead'
    if before['alive'] != agent['alive']:
        return 'alive again' if agent['alive'] else 'dead'
    if agent['needs_sync'] and not before['needs_sync']:
        return 'needs a full sync'
    if agent['restarts'] != before['restarts']:
        return 'restarted'
    return None


def _agents(args, transport, out):
    """Listen to the reports; print the registry, or follow it."""
    registry = registry_mod.AgentRegistry(
        registry_mod.agent_down_time(CONF))
    listener = registry.listener(
        transport, CONF.agent.report_topic,
        'vifagent-ctl-%s' % uuid.uuid4().hex[:8])
    listener.start()
    try:
        if not args.watch:
            time.sleep(args.listen if args.listen is not None
                       else CONF.agent.report_interval + 1)
            agents = registry.agents()
            if args.format == 'json':
                _print(args, agents, out)
            else:
                _table(_AGENT_COLUMNS, [_agent_row(a) for a in agents],
                       out)
            return 0
        deadline = (time.monotonic() + args.duration
                    if args.duration is not None else None)
        seen = {}
        while deadline is None or time.monotonic() < deadline:
            for agent in registry.agents():
                event = _agent_event(agent, seen.get(agent['host']))
                seen[agent['host']] = agent
                if event is None:
                    continue
                if args.format == 'json':
                    out.write(json.dumps({'event': event, 'agent': agent},
                                         sort_keys=True) + '\n')
                else:
                    out.write('%s %s %s%s\n' % (
                        time.strftime('%H:%M:%S'), agent['host'], event,
                        ': %s' % agent['sync_reason']
                        if event == 'needs a full sync' else ''))
                out.flush()
            time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        listener.stop()
        listener.wait()


def _binding_from_args(args):
    if args.binding_json:
        return json.loads(args.binding_json)
    binding = {}
    for field in ('port_id', 'mac_address', 'instance_uuid', 'network_id',
                  'mtu', 'revision'):
        value = getattr(args, field)
        if value is not None:
            binding[field] = value
    if args.admin_down:
        binding['admin_state_up'] = False
    if args.netns:
        binding.update(vif_type='netns', netns=args.netns)
    if args.port_security:
        binding['port_security_enabled'] = True
    for field in ('fixed_ips', 'security_groups'):
        if getattr(args, field):
            binding[field] = getattr(args, field)
    return binding


def _load(path):
    stream = sys.stdin if path == '-' else open(path)
    with stream:
        return json.load(stream)


def _port_row(port):
    devices = port.get('devices') or {}
    row = dict(port, **{k: devices.get(k) for k in ('tap', 'qbr', 'qvo')})
    row['groups'] = ','.join(port.get('security_groups') or ()) or (
        'unfiltered' if not port.get('port_security_enabled') else 'none')
    return [row.get(c) for c in _PORT_COLUMNS]


def _group_row(group):
    members = group.get('members') or {}
    return [group['id'], group['revision'], group['stateful'],
            len(group['rules']),
            sum(len(v) for v in members.values())]


def _rule_text(rule):
    """One rule in a line, the way an operator reads it."""
    parts = [rule['direction'], rule['ethertype'],
             str(rule['protocol'] if rule['protocol'] is not None
                 else 'any')]
    if rule['port_range_min'] is not None:
        parts.append('%s-%s' % (rule['port_range_min'],
                                rule['port_range_max']))
    if rule['remote_ip_prefix']:
        parts.append('remote %s' % rule['remote_ip_prefix'])
    if rule['remote_group_id']:
        parts.append('remote group %s' % rule['remote_group_id'])
    return ' '.join(parts)


def _table(header, rows, out):
    cells = [[('' if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells])
              for i, h in enumerate(header)]
    line = '  '.join('%-*s' % (w, h.upper()) for w, h in zip(widths, header))
    out.write(line.rstrip() + '\n')
    for r in cells:
        out.write('  '.join('%-*s' % (w, v)
                            for w, v in zip(widths, r)).rstrip() + '\n')


def _print(args, value, out):
    if args.format == 'json':
        json.dump(value, out, indent=2, sort_keys=True)
        out.write('\n')
        return
    if args.command == 'groups':
        _table(_GROUP_COLUMNS, [_group_row(g) for g in value], out)
    elif args.command == 'group':
        _table(_GROUP_COLUMNS, [_group_row(value)], out)
        for rule in value['rules']:
            out.write('  %s\n' % _rule_text(rule))
    elif args.command == 'sync-groups':
        for key in ('added', 'updated', 'unchanged', 'removed'):
            out.write('%-10s %s\n' % (key + ':', ' '.join(value[key])))
    elif isinstance(value, list):
        _table(_PORT_COLUMNS, [_port_row(p) for p in value], out)
    elif args.command in ('bind', 'show'):
        _table(_PORT_COLUMNS, [_port_row(value)], out)
    elif args.command == 'sync':
        for key in ('added', 'updated', 'unchanged', 'removed'):
            out.write('%-10s %d\n' % (key + ':', len(value[key])))
        _table(_PORT_COLUMNS, [_port_row(p) for p in value['ports']], out)
    else:
        width = max(len(k) for k in value)
        for key in sorted(value):
            out.write('%-*s  %s\n' % (width, key, value[key]))


def _watch(args, transport, out):
    done = threading.Event()
    seen = [0]
    lock = threading.Lock()

    def emit(kind, payload):
        with lock:
            if args.format == 'json':
                out.write(json.dumps({'type': kind, 'data': payload},
                                     sort_keys=True) + '\n')
            elif kind == 'port_status':
                for s in payload:
                    out.write('%s %s %s %s %s\n' % (
                        time.strftime('%H:%M:%S'), s.get('host'),
                        s.get('port_id'), s.get('status'),
                        s.get('reason') or ''))
            elif kind == 'resync_request':
                out.write('%s %s resync_request %s\n' % (
                    time.strftime('%H:%M:%S'), payload['host'],
                    payload['reason']))
            else:
                out.write('%s %s heartbeat %s\n' % (
                    time.strftime('%H:%M:%S'), payload.get('host'),
                    json.dumps(payload.get('ports_by_status'),
                               sort_keys=True)))
            out.flush()
            seen[0] += 1
            if args.count and seen[0] >= args.count:
                done.set()

    listener = client_mod.get_report_listener(
        transport, CONF.agent.report_topic,
        'vifagent-ctl-%s' % uuid.uuid4().hex[:8],
        lambda statuses: emit('port_status', statuses),
        lambda state: emit('report_state', state),
        lambda host, reason: emit('resync_request',
                                  {'host': host, 'reason': reason}))
    listener.start()
    try:
        done.wait(args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        listener.stop()
        listener.wait()
    return 0


def run(args, out=sys.stdout):
    conf_args = []
    for path in args.config_file:
        conf_args += ['--config-file', path]
    CONF(conf_args, project='vifagent')
    if args.transport_url:
        CONF.set_override('transport_url', args.transport_url)
    if getattr(args, 'json', False):
        args.format = 'json'
    transport = rpc.get_transport(CONF)
    try:
        if args.command == 'watch':
            return _watch(args, transport, out)
        if args.command == 'agents':
            return _agents(args, transport, out)
        agent = client_mod.AgentClient(transport, args.host or CONF.host,
                                       topic=CONF.agent.rpc_topic,
                                       timeout=args.timeout)
        if args.command == 'bind':
            value = agent.bind_port(_binding_from_args(args))
        elif args.command == 'unbind':
            value = agent.unbind_port(args.port_id)
        elif args.command == 'show':
            value = agent.get_port(args.port_id)
        elif args.command == 'list':
            value = agent.list_ports()
        elif args.command == 'sync':
            value = agent.sync_ports(_load(args.file))
        elif args.command == 'groups':
            value = agent.list_security_groups()
        elif args.command == 'group':
            value = agent.get_security_group(args.security_group_id)
        elif args.command == 'sync-groups':
            value = agent.sync_security_groups(_load(args.file))
        elif args.command == 'group-update':
            agent.security_group_update(_load(args.file))
            return 0
        else:
            value = agent.get_agent_state()
        _print(args, value, out)
        return 0
    finally:
        transport.cleanup()


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except exception.VifAgentException as e:
        # Remote errors are rebuilt as subclasses named <Class>_Remote.
        name = type(e).__name__.replace('_Remote', '')
        sys.stderr.write('error: %s: %s\n' % (name, e.message))
        return 2
    except messaging.MessagingTimeout:
        sys.stderr.write('error: no reply from agent %s within %ds\n' % (
            args.host or CONF.host, args.timeout))
        return 1
    except messaging.RemoteError as e:
        sys.stderr.write('error: %s: %s\n' % (e.exc_type, e.value))
        return 1
    except (OSError, ValueError) as e:
        sys.stderr.write('error: %s\n' % e)
        return 1


if __name__ == '__main__':
    sys.exit(main())
