"""Virtual networks on this host: bridges, taps and veths (pyroute2), dnsmasq per
network, nftables rules in the platform's own tables. ``manager.NetworkManager``
is the entry point; the host agent and the network service use it.
"""
