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

"""Typed errors of vifagent.

Every error a caller may see is a class here, so a controller can catch
``InvalidBinding`` rather than parse a message. The module is listed in the
RPC transport's ``allowed_remote_exmods``, which lets oslo.messaging rebuild
these classes on the caller's side.
"""

__all__ = [
    'VifAgentException',
    'InvalidBinding',
    'InvalidSecurityGroup',
    'SecurityGroupNotFound',
    'PortNotFound',
    'StaleRevision',
    'NetworkNotFound',
    'VlanPoolExhausted',
    'DataplaneError',
    'OvsdbError',
    'PrivilegedError',
    'StoreUnavailable',
]


class VifAgentException(Exception):
    """Base class: a message built from ``msg_fmt`` and keyword arguments."""

    msg_fmt = "An unknown vifagent error occurred."

    def __init__(self, message=None, **kwargs):
        self.kwargs = kwargs
        if message is None:
            try:
                message = self.msg_fmt % kwargs
            except (KeyError, TypeError):
                # A wrong template must not hide the original error.
                message = self.msg_fmt
        self.message = message
        super().__init__(message)

    def __str__(self):
        return self.message


class InvalidBinding(VifAgentException):
    """A binding (or a port id) failed validation; nothing was changed."""

    msg_fmt = "Invalid binding field %(field)r: %(reason)s"

    def __init__(self, message=None, field=None, reason=None, **kwargs):
        self.field = field
        self.reason = reason
        super().__init__(message, field=field, reason=reason, **kwargs)


class InvalidSecurityGroup(VifAgentException):
    """A security group failed validation; nothing was changed."""

    msg_fmt = "Invalid security group field %(field)r: %(reason)s"

    def __init__(self, message=None, field=None, reason=None, **kwargs):
        self.field = field
        self.reason = reason
        super().__init__(message, field=field, reason=reason, **kwargs)


class SecurityGroupNotFound(VifAgentException):
    msg_fmt = "Security group %(security_group_id)s is not held on this host."


class PortNotFound(VifAgentException):
    msg_fmt = "Port %(port_id)s is not bound on this host."


class StaleRevision(VifAgentException):
    msg_fmt = ("Port %(port_id)s: revision %(revision)s is older than the "
               "stored revision %(current)s.")


class NetworkNotFound(VifAgentException):
    msg_fmt = "Network %(network_id)s has no bound port on this host."


class VlanPoolExhausted(VifAgentException):
    msg_fmt = "No free local VLAN for network %(network_id)s."


class DataplaneError(VifAgentException):
    """A kernel or OVSDB operation failed while applying a plan."""

    msg_fmt = "Dataplane operation failed: %(reason)s"


class OvsdbError(DataplaneError):
    msg_fmt = "OVSDB operation failed: %(reason)s"


class PrivilegedError(DataplaneError):
    """The privileged daemon died or hung under a batch of writes."""

    msg_fmt = "Privileged operation failed: %(reason)s"


class StoreUnavailable(VifAgentException):
    """The store cannot record a change (disk full, read-only, damaged).

    Nothing was changed, neither in the store nor on the host.
    """

    msg_fmt = "The agent's store is unavailable: %(reason)s"
