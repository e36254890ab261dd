"""{#SCOPE} decided from address text, checked against the standard library's own judgement."""

import ipaddress
import random
import socket

import pytest

from tcp_lld.discovery import scope


def reference(addresses):
    """What `ipaddress` says, the way discovery decided before it read the text itself."""
    parsed = []
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        parsed.append(getattr(address, "ipv4_mapped", None) or address)
    if any(address.is_unspecified for address in parsed):
        return "any"
    if parsed and all(address.is_loopback for address in parsed):
        return "loopback"
    return "address"


def ntop(family, packed):
    return socket.inet_ntop(family, packed)


def special_addresses():
    """Every form the kernel can hand a listener, as inet_ntop writes it (what the scan stores)."""
    v4 = ["0.0.0.0", "127.0.0.1", "127.255.255.254", "126.255.255.255", "128.0.0.1", "10.0.0.1",
          "169.254.1.1", "255.255.255.255"]
    packed_v6 = [bytes(16), bytes(15) + b"\x01", bytes(15) + b"\x02", b"\xfe\x80" + bytes(13) + b"\x01",
                 b"\x20\x01\x0d\xb8" + bytes(12)]
    mapped = [bytes(10) + b"\xff\xff" + socket.inet_aton(text) for text in v4]
    compatible = [bytes(12) + socket.inet_aton(text) for text in v4]  # deprecated ::a.b.c.d
    texts = v4 + [ntop(socket.AF_INET6, p) for p in packed_v6 + mapped + compatible]
    return texts + ["fe80::1%eth0", "FE80::1%lo", "::FFFF:127.0.0.1"]


def random_addresses(count, seed):
    chooser = random.Random(seed)
    texts = []
    for _ in range(count):
        if chooser.random() < 0.5:
            first = chooser.choice([0, 10, 126, 127, 128, 192])
            texts.append(ntop(socket.AF_INET, bytes([first] + [chooser.randrange(256) for _ in range(3)])))
        else:
            prefix = chooser.choice([bytes(10) + b"\xff\xff", bytes(12), bytes(15), b"\xfe\x80" + bytes(10)])
            tail = bytes(chooser.randrange(3) for _ in range(16 - len(prefix)))
            if prefix == bytes(10) + b"\xff\xff" and chooser.random() < 0.3:
                tail = bytes([127]) + tail[1:]
            texts.append(ntop(socket.AF_INET6, prefix + tail))
    return texts


@pytest.mark.parametrize("address", special_addresses())
def test_one_address_scopes_as_ipaddress_says(address):
    assert scope([address]) == reference([address])


@pytest.mark.parametrize("seed", range(5))
def test_address_sets_scope_as_ipaddress_says(seed):
    pool = special_addresses() + random_addresses(300, seed)
    chooser = random.Random(seed)
    for _ in range(500):
        addresses = chooser.sample(pool, chooser.randrange(1, 4))
        assert scope(addresses) == reference(addresses), addresses


def test_no_address_is_not_loopback():
    assert scope([]) == "address"
