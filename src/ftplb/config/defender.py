"""The ``[defender]`` section: bans after failed logins, and the allow and deny lists."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import Field, PlainSerializer, PlainValidator
from pydantic_core import PydanticCustomError

from ftplb.balancing.defender import DefenderPolicy, Network
from ftplb.config.fields import PositiveDuration, Section
from ftplb.config.problems import as_written

__all__ = ["Defender"]


def _check_network(value: object) -> Network:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    reason = "not a string"
    if isinstance(value, str):
        try:
            network = ipaddress.ip_network(value)
        except ValueError as error:
            reason = str(error)
        else:
            if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
                reason = "an IPv4-mapped network: write it as IPv4, which it matches"
            else:
                return network
    raise PydanticCustomError(
        "cidr",
        'invalid network {value}: {reason}; expected a CIDR such as "10.0.0.0/8", '
        '"2001:db8::/32" or one address',
        {"value": as_written(value), "reason": reason},
    )


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")

Cidr = Annotated[Network, PlainValidator(_check_network), PlainSerializer(str)]
"""A network in CIDR form; a bare address is a network of one."""


class Defender(Section):
    """Failed logins per client address, bans that double on each repeat, and two lists."""

    max_failures: Annotated[int, Field(ge=1, le=1000)] = 5
    window: PositiveDuration = 60.0
    ban_time: PositiveDuration = 600.0
    ban_time_max: PositiveDuration = 86400.0
    allow: list[Cidr] = []
    deny: list[Cidr] = []

    def policy(self) -> DefenderPolicy:
        """The rules of this section, for :class:`~ftplb.balancing.defender.DefenderRecord`."""
        return DefenderPolicy(
            max_failures=self.max_failures,
            window=self.window,
            ban_time=self.ban_time,
            ban_time_max=self.ban_time_max,
            allow=tuple(self.allow),
            deny=tuple(self.deny),
        )
